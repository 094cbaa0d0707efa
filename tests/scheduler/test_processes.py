"""`python -m scheduler` as real processes: two at once on one PostgreSQL, one killed with
SIGKILL in the middle of a run, and one serving until SIGTERM."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats as nats_client
import pytest
from sqlalchemy import func, select

from hsm.authority import CertificateAuthority
from hsm.client_keys import ClientKey, generate_client_key
from repository import Certificate, Store
from repository.schema import certs, revoked_certs
from tests.fixtures.nats import NatsServer
from tests.fixtures.ports import free_port
from tests.scheduler.conftest import REPO_ROOT
from tests.scheduler.helpers import crl_serials, decode_event, issue_due


@pytest.fixture(scope="module")
def rsa_key() -> ClientKey:
    return generate_client_key("rsa", 2048)


def seed(store: Store, authority: CertificateAuthority, count: int, rsa_key: ClientKey,
         *, rsa_every: int) -> list[Certificate]:
    """``count`` due certificates, one thing each; every ``rsa_every``-th is RSA 2048 (slow to
    renew, which spreads a run over a few seconds), the others EC P-256."""
    made = []
    for i in range(count):
        rsa = i % rsa_every == 0
        made.append(issue_due(store, authority, f"thing-{i:03d}",
                              key_type="rsa" if rsa else "ec", bits=2048 if rsa else 256,
                              key=rsa_key if rsa else None,
                              expires_in=timedelta(hours=1, minutes=i)))
    return made


@dataclass
class Outcome:
    """Where each original certificate stands."""

    rotated: dict[str, str]  # original serial -> the thing's new active serial
    untouched: set[str]
    events: Counter[str]  # new serial -> events in the outbox


def outcome(store: Store, originals: list[Certificate]) -> Outcome:
    """Check that every original is either rotated exactly once or untouched."""
    with store.engine.connect() as conn:
        revocations = Counter(conn.execute(select(revoked_certs.c.serial)).scalars())
        total_rows = conn.execute(select(func.count()).select_from(certs)).scalar_one()
    events: Counter[str] = Counter()
    for event in store.pending_events(limit=10_000):
        message, body = decode_event(event.payload)
        assert event.subject == f"things.{body['thing_id']}.commands.cert-rotation"
        assert message.publisher == body["thing_id"]
        events[body["serial"]] += 1
    rotated: dict[str, str] = {}
    untouched: set[str] = set()
    for original in originals:
        [active] = store.list_by_thing(original.thing_id).items  # one active per thing
        if active.serial == original.serial:
            assert revocations[original.serial] == 0
            untouched.add(original.serial)
        else:
            assert revocations[original.serial] == 1
            assert events[active.serial] == 1
            rotated[original.serial] = active.serial
    assert sum(revocations.values()) == len(rotated)
    assert sum(events.values()) == len(rotated)
    assert total_rows == len(originals) + len(rotated)
    return Outcome(rotated, untouched, events)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m scheduler` processes; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        index = len(started)
        process = subprocess.Popen(
            [sys.executable, "-m", "scheduler", *args], cwd=REPO_ROOT, env=env,
            stdout=(tmp_path / f"scheduler-{index}.out").open("wb"),
            stderr=(tmp_path / f"scheduler-{index}.err").open("wb"))
        process.index = index  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def output(tmp_path: Path, process: subprocess.Popen[bytes]) -> tuple[str, str]:
    index = process.index  # type: ignore[attr-defined]
    return ((tmp_path / f"scheduler-{index}.out").read_text(),
            (tmp_path / f"scheduler-{index}.err").read_text())


def test_two_processes_rotate_each_certificate_exactly_once(
    postgres_url: str, make_store: Callable[[str], Store], authority: CertificateAuthority,
    scheduler_env: Callable[..., dict[str, str]], spawn: Callable[..., subprocess.Popen[bytes]],
    crl_path: Path, tmp_path: Path, rsa_key: ClientKey,
) -> None:
    store = make_store(postgres_url)
    originals = seed(store, authority, 60, rsa_key, rsa_every=5)
    env = scheduler_env(postgres_url)
    processes = [spawn(env, "--once", "--no-relay", "--batch", "3") for _ in range(2)]
    reports = []
    for process in processes:
        assert process.wait(timeout=120) == 0, output(tmp_path, process)
        reports.append(json.loads(output(tmp_path, process)[0].strip().splitlines()[-1]))

    rotated_by = [{r["old_serial"] for r in report["rotated"]} for report in reports]
    assert all(rotated_by), "both processes took part"
    assert not rotated_by[0] & rotated_by[1]
    assert rotated_by[0] | rotated_by[1] == {c.serial for c in originals}
    assert all(report["failed"] == [] and report["skipped"] == [] for report in reports)
    state = outcome(store, originals)
    assert len(state.rotated) == 60 and not state.untouched
    assert crl_serials(crl_path) >= {int(c.serial, 16) for c in originals}


async def test_sigkill_mid_run_leaves_whole_rotations(
    postgres_url: str, make_store: Callable[[str], Store], authority: CertificateAuthority,
    scheduler_env: Callable[..., dict[str, str]], spawn: Callable[..., subprocess.Popen[bytes]],
    make_rotator, tmp_path: Path, rsa_key: ClientKey,
) -> None:
    store = make_store(postgres_url)
    originals = seed(store, authority, 30, rsa_key, rsa_every=3)
    process = spawn(scheduler_env(postgres_url), "--once", "--no-relay", "--batch", "2",
                    "--concurrency", "1", "--claim-lease", "3s")
    deadline = time.monotonic() + 60
    while True:
        with store.engine.connect() as conn:
            done = conn.execute(select(func.count()).select_from(revoked_certs)).scalar_one()
        if done >= 3:  # the 4th certificate (RSA: slow) is being renewed now
            break
        assert process.poll() is None, output(tmp_path, process)
        assert time.monotonic() < deadline, "no rotation within a minute"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.monotonic()

    state = outcome(store, originals)  # whole rotations only
    assert 3 <= len(state.rotated) < len(originals)
    with store.engine.connect() as conn:
        leased = set(conn.execute(select(certs.c.serial).where(
            certs.c.lease_owner.is_not(None), certs.c.revoked_at.is_(None))).scalars())
    assert leased and leased <= state.untouched  # the dead process's claims

    # While its leases last, nobody else can claim those certificates.
    far = datetime.now(UTC) + timedelta(days=3)
    claimed = {c.serial for c in store.claim_expiring(far, "test-claimer", limit=100)}
    assert claimed == state.untouched - leased
    for serial in claimed:
        assert store.release_claim(serial, "test-claimer")

    # Once they have run out, a later run renews every certificate left.
    await asyncio.sleep(max(0.0, killed_at + 3.2 - time.monotonic()))
    report = await make_rotator(store, batch=50).run_once()
    assert {r.old_serial for r in report.rotated} == state.untouched
    assert report.failed == []
    final = outcome(store, originals)
    assert len(final.rotated) == len(originals) and not final.untouched
    assert {final.rotated[s] for s in state.rotated} == set(state.rotated.values())


async def test_scheduler_process_publishes_and_stops_on_sigterm(
    sqlite_url: str, make_store: Callable[[str], Store], authority: CertificateAuthority,
    scheduler_env: Callable[..., dict[str, str]], spawn: Callable[..., subprocess.Popen[bytes]],
    nats: NatsServer, crl_path: Path, tmp_path: Path, rsa_key: ClientKey,
) -> None:
    store = make_store(sqlite_url)
    subscriber = await nats_client.connect(nats.url)
    try:
        subscription = await subscriber.subscribe("things.*.commands.cert-rotation")
        await subscriber.flush()
        originals = seed(store, authority, 3, rsa_key, rsa_every=100)
        port = free_port()
        process = spawn(scheduler_env(sqlite_url, MF_BROKER_URL=nats.url,
                                      MF_CERTS_CHECK_TIME="00:00"), "--metrics-port", str(port))
        received = set()
        for _ in originals:
            msg = await subscription.next_msg(timeout=30)
            received.add(decode_event(msg.data)[1]["thing_id"])
        assert received == {c.thing_id for c in originals}
    finally:
        await subscriber.close()
    old_serials = {int(c.serial, 16) for c in originals}
    deadline = time.monotonic() + 20
    while store.outbox_size() or not crl_path.exists() or not crl_serials(crl_path) >= old_serials:
        assert time.monotonic() < deadline, "outbox not drained or CRL not re-signed"
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + 10
    while True:
        metrics = await asyncio.to_thread(scrape, port)
        if "certs_outbox_backlog 0.0" in metrics:
            break
        assert time.monotonic() < deadline, metrics
        await asyncio.sleep(0.1)
    assert "certs_rotations_total 3.0" in metrics
    assert "certs_rotation_failures_total 0.0" in metrics
    assert "certs_events_published_total 3.0" in metrics
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    _, log = output(tmp_path, process)
    rotation_lines = [line for line in log.splitlines() if '"certificate rotated"' in line]
    assert len(rotation_lines) == 3
    assert "PRIVATE KEY" not in log
