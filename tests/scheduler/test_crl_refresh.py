"""The CRL timer: re-signed before it goes stale without any revocation, and the file at
MF_CERTS_CRL_PATH is never seen half-written."""

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from authority.crl_publisher import CrlPublisher
from repository import Store
from scheduler.schedule import Scheduler
from tests.scheduler.helpers import bulk_revocations

ENTRIES = 10_000  # about 700 kB of PEM: a torn write would be easy to catch


@dataclass(frozen=True)
class Seen:
    at: float
    number: int
    this_update: float
    next_update: float
    entries: int


class Reader(threading.Thread):
    """Reads and parses the CRL file as fast as it can until stopped."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            at = time.time()  # the read happens at this moment or later
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                crl = x509.load_pem_x509_crl(data)
                number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
                assert crl.next_update_utc is not None
                self.seen.append(Seen(at, number, crl.last_update_utc.timestamp(),
                                      crl.next_update_utc.timestamp(), len(crl)))
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                self.errors.append(f"{type(exc).__name__}: {exc} ({len(data)} bytes)")
            time.sleep(0.001)  # leave the GIL to the publisher now and then


async def test_crl_is_resigned_before_it_goes_stale_and_never_torn(
    sqlite_url: str, make_store: Callable[[str], Store], make_crl: Callable[..., CrlPublisher],
    crl_path: Path,
) -> None:
    store = make_store(sqlite_url)
    bulk_revocations(store.engine, ENTRIES)
    seq = store.crl_state().revocation_seq
    crl = make_crl(store, validity=timedelta(seconds=4))
    scheduler = Scheduler(None, None, crl, crl_validity=timedelta(seconds=4))
    assert scheduler.crl_interval == 1.0
    reader = Reader(crl_path)
    reader.start()
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))
    try:
        # Wait for the first publication and three re-signings by the timer alone; the
        # deadline is generous because a loaded CI machine may run the loop late.
        deadline = time.monotonic() + 40
        while (crl.current is None or crl.current.number < 4) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert crl.current is not None and crl.current.number >= 4, (
            f"timer re-signed too rarely: {scheduler.crl_checks} checks, "
            f"CRL {crl.current and crl.current.number}")
        last_by_timer = crl.current.number
        # Extra re-signing while the reader polls, to give a torn write every chance.
        await asyncio.to_thread(lambda: [crl.publish() for _ in range(10)])
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        reader.halt.set()
        reader.join(timeout=10)

    assert reader.errors == []
    timer_phase = [s for s in reader.seen if s.number <= last_by_timer]
    assert len(reader.seen) > 50
    numbers = [s.number for s in reader.seen]
    assert numbers == sorted(numbers)
    # the reader saw every CRL the timer wrote: each stays in place for about 2 s
    assert {s.number for s in timer_phase} == set(range(1, last_by_timer + 1))
    assert len(set(numbers)) >= 8  # and most of the 10 extra ones
    by_number = {s.number: s for s in reader.seen}
    updates = [by_number[n].this_update for n in sorted(by_number)]
    assert updates == sorted(updates) and updates[-1] > updates[0]
    for first, second in itertools.pairwise(timer_phase):
        if second.number != first.number:  # re-signed at about half the validity
            assert 2.0 <= second.this_update - first.this_update <= 4.0
    stale = [s for s in reader.seen if s.at > s.next_update]
    assert stale == []  # never stale
    assert all(s.entries == ENTRIES for s in reader.seen)
    assert store.crl_state().revocation_seq == seq  # without any revocation
