"""Platform-event benchmark: from XADD of a ``thing.remove`` to the thing's certificate revoked
in the store (transaction committed) and listed in the CRL on disk (re-signed in the HSM).

Run: .venv/bin/python bench/events_bench.py [--sqlite] [--events 200] [--backlog 10000]

It makes its own SoftHSM2 token (EC P-256 CA), a redis-server and, by default, a throwaway
PostgreSQL 15 cluster (the test suite's helpers); --sqlite uses a SQLite file instead. Each
event removes a thing with one EC certificate. The consumer is the scheduler's own
(``scheduler.platform_events``) on the real store and CrlPublisher, in a thread of its own;
the times are taken where its ``revoke_things`` returns (committed) and where its
``cover_crl`` returns (the CRL file was replaced). ``--backlog`` revoked entries are put into
the CRL first, so each re-signing has a realistic size.

Two runs:
- one at a time: XADD, wait until the CRL covers it, next (p50/p99 over ``--events``);
- a burst: ``--events`` XADDed in one transaction, each one's latency from that moment, and
  the rate at which the consumer works through them.
At the end every removed serial is checked in the store and in the CRL file (pyca).
"""

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import redis
from cryptography import x509

from authority.crl_publisher import CrlPublisher
from repository import NotFound, Revocation, Store, create_engine_for, migrate
from scheduler.platform_events import STREAM, PlatformEvents

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.crl_bench import issue_and_save, make_authority  # noqa: E402
from tests.fixtures.redis import RedisServer  # noqa: E402
from tests.scheduler.helpers import bulk_revocations  # noqa: E402


class Timings:
    """When each thing's revocation committed and when a CRL covering it was written."""

    def __init__(self) -> None:
        self.committed: dict[str, float] = {}
        self.covered: dict[str, float] = {}
        self._seq_things: dict[int, list[str]] = {}
        self._uncovered: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def revoked(self, things: Sequence[str], revocations: Sequence[Revocation]) -> None:
        now = time.perf_counter()
        with self._lock:
            for revocation in revocations:
                self.committed[revocation.thing_id] = now
                self._uncovered.append((revocation.seq, revocation.thing_id))

    def crl_written(self, seq: int) -> None:
        now = time.perf_counter()
        with self._lock:
            left = []
            for covered_seq, thing in self._uncovered:
                if covered_seq <= seq:
                    self.covered[thing] = now
                else:
                    left.append((covered_seq, thing))
            self._uncovered = left
            self.changed.notify_all()

    def wait_covered(self, things: Sequence[str], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not all(thing in self.covered for thing in things):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"events not handled within {timeout} s")
                self.changed.wait(left)


def consumer_thread(url: str, store: Store, crl: CrlPublisher, timings: Timings
                    ) -> tuple[threading.Thread, PlatformEvents, asyncio.AbstractEventLoop,
                               asyncio.Event]:
    def revoke(things: Sequence[str]) -> list[Revocation]:
        revocations = store.revoke_things(things)
        timings.revoked(things, revocations)
        return revocations

    def cover(seq: int) -> object:
        published = crl.ensure_covers(seq)
        timings.crl_written(seq)
        return published

    consumer = PlatformEvents(url, revoke_things=revoke, cover_crl=cover, batch=100)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            ready.set()
            await consumer.run(stop)

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait()
    return thread, consumer, loop, stop


def percentiles(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {cuts[49]:.1f} ms, p99 {cuts[98]:.1f} ms, max {ms[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=10_000,
                        help="revoked entries already in the CRL")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="events-bench-"))
    authority = make_authority(work, False)
    server = RedisServer().start()
    cluster = None
    if args.sqlite:
        url = f"sqlite:///{work / 'certs.db'}"
    else:
        from tests.fixtures.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        url = cluster.url(cluster.create_database("bench"))
    try:
        migrate(url)
        store = Store(create_engine_for(url), authority.sealer)
        if args.backlog:
            bulk_revocations(store.engine, args.backlog)
        crl_path = work / "crl.pem"
        crl = CrlPublisher(authority, store, str(crl_path), timedelta(hours=24))
        crl.publish()
        serials: dict[str, str] = {}
        for run in ("seq", "burst"):
            for i in range(args.events):
                thing = f"{run}-{i:04d}"
                serials[thing] = issue_and_save(authority, store, thing)
        timings = Timings()
        thread, consumer, loop, stop = consumer_thread(server.url, store, crl, timings)
        deadline = time.monotonic() + 30
        while not consumer.status.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        producer = redis.Redis.from_url(server.url, decode_responses=True)
        backend = "SQLite" if args.sqlite else "PostgreSQL 15"
        print(f"{backend}, EC P-256 CA in SoftHSM2, redis-server {producer.info()['redis_version']}"
              f", {os.cpu_count()} cores, CRL of {args.backlog:,} + up to "
              f"{2 * args.events} entries\n")

        sent: dict[str, float] = {}
        for i in range(args.events):
            thing = f"seq-{i:04d}"
            sent[thing] = time.perf_counter()
            producer.xadd(STREAM, {"operation": "thing.remove", "id": thing})
            timings.wait_covered([thing])
        things = [f"seq-{i:04d}" for i in range(args.events)]
        print(f"one at a time ({args.events} events):")
        print(f"  XADD -> revoked in the store: "
              f"{percentiles([timings.committed[t] - sent[t] for t in things])}")
        print(f"  XADD -> listed in the CRL file: "
              f"{percentiles([timings.covered[t] - sent[t] for t in things])}")

        things = [f"burst-{i:04d}" for i in range(args.events)]
        with producer.pipeline(transaction=True) as pipe:
            for thing in things:
                pipe.xadd(STREAM, {"operation": "thing.remove", "id": thing})
            start = time.perf_counter()
            pipe.execute()
        timings.wait_covered(things)
        elapsed = max(timings.covered[t] for t in things) - start
        print(f"burst of {args.events} events in one XADD transaction:")
        print(f"  XADD -> revoked in the store: "
              f"{percentiles([timings.committed[t] - start for t in things])}")
        print(f"  XADD -> listed in the CRL file: "
              f"{percentiles([timings.covered[t] - start for t in things])}")
        print(f"  all handled in {elapsed:.2f} s ({args.events / elapsed:.0f} events/s)")

        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        listed = {entry.serial_number for entry in
                  x509.load_pem_x509_crl(crl_path.read_bytes())}
        for serial in serials.values():
            try:
                store.get(serial)
            except NotFound:
                pass
            else:
                raise AssertionError(f"{serial} still active")
            assert int(serial, 16) in listed, serial
        print(f"\nchecked: {len(serials)} removed serials revoked in the store and in the CRL "
              f"file ({len(listed):,} entries)")
        producer.close()
        store.engine.dispose()
    finally:
        server.cleanup()
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
