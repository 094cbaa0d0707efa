"""Latency of the store's read paths on PostgreSQL with a million certificates.

Fills a database with ``--certs`` certificates over ``--things`` things (plus one heavy thing
with ``--heavy`` certificates, like the 20,676-certificate thing measured on the Go service),
revokes ``--revoked`` of them (a few of those already expired), and times through the public
``Store`` API, one caller at a time:

- get by serial, a page of a thing at offset 0 and on its last page (typical and heavy thing),
  pages of the heavy thing at offsets across it, and its count alone (a page past the end),
- the expiring-window query and a rotation claim,
- the CRL reads: a 1,000-entry page, the whole list in 10,000-entry pages, the increment poll,
- get and the pages again, awaited on an event loop (the reads the HTTP service makes).

Without ``--url`` a throwaway PostgreSQL 15 cluster is started as the test fixture does.

    python3 bench/repository_bench.py                   # 1M certificates, ~2-4 minutes
    python3 bench/repository_bench.py --url postgresql+psycopg://user@host/db --certs 100000
"""

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy.engine import make_url

from repository import Store, create_engine_for, migrate
from tests.fixtures.postgres import PostgresCluster
from tests.repository.helpers import SoftwareSealer, make_cert

HEAVY_THING = "thing-heavy"


def _psycopg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def fill(url: str, certs: int, things: int, heavy: int, revoked: int) -> dict[str, float]:
    """Bulk-load with server-side multi-row INSERT ... SELECT (no per-row round trips)."""
    sample = make_cert("thing-00000")
    pem = sample.certificate_pem
    sealed = SoftwareSealer().seal((sample.private_key_pem or "").encode(), b"x")
    timings: dict[str, float] = {}
    with psycopg.connect(_psycopg_dsn(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        chunk = 100_000
        for first in range(1, certs + 1, chunk):
            last = min(first + chunk - 1, certs)
            conn.execute(
                """
                INSERT INTO certs (serial, thing_id, owner_id, expires_at, not_before, client_cert,
                    private_key_enc, private_key_type, key_bits, downloaded, created_at,
                    serial_base)
                SELECT 'a' || substr(md5(i::text) || md5((-i)::text), 1, 39),
                       CASE WHEN i <= %(heavy)s THEN %(heavy_thing)s
                            ELSE 'thing-' || lpad((i %% %(things)s)::text, 5, '0') END,
                       'user-1',
                       now() - interval '20 days'
                             + ((i::bigint * 7919) %% (730 * 86400)) * interval '1 second',
                       now() - interval '400 days',
                       %(pem)s, %(sealed)s, 'ec', 256, i %% 3 = 0, now(), 16
                FROM generate_series(%(first)s, %(last)s) AS i
                """,
                {"heavy": heavy, "heavy_thing": HEAVY_THING, "things": things, "pem": pem,
                 "sealed": sealed, "first": first, "last": last},
            )
            print(f"  inserted {last:,} certificates", file=sys.stderr, flush=True)
        timings["insert certificates"] = time.perf_counter() - started

        started = time.perf_counter()
        step = max(certs // revoked, 1)
        conn.execute(
            """
            WITH picked AS (
                SELECT serial FROM certs
                WHERE (('x' || substr(serial, 1, 8))::bit(32)::bigint %% %(step)s) = 0
                LIMIT %(revoked)s)
            UPDATE certs SET revoked_at = now() - interval '15 days'
                               + (('x' || substr(certs.serial, 9, 6))::bit(24)::int %% 1209600)
                                 * interval '1 second',
                             revocation_reason = 'superseded', private_key_enc = NULL
            FROM picked WHERE certs.serial = picked.serial
            """,
            {"step": step, "revoked": revoked},
        )
        conn.execute(
            """
            INSERT INTO revoked_certs (seq, serial, thing_id, revoked_at, reason, expires_at,
                                       serial_base)
            SELECT row_number() OVER (ORDER BY revoked_at, serial), serial, thing_id,
                   revoked_at, revocation_reason, expires_at, serial_base
            FROM certs WHERE revoked_at IS NOT NULL
            """
        )
        conn.execute("UPDATE crl_state SET revocation_seq = (SELECT max(seq) FROM revoked_certs)")
        timings["revoke"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        timings["vacuum analyze"] = time.perf_counter() - started
    return timings


def measure(name: str, call: Callable[[int], Any], iterations: int,
            after: Callable[[], Any] | None = None) -> tuple[str, list[float]]:
    """Time ``call(i)``; ``after`` (untimed) undoes what a call changed."""
    for i in range(min(50, iterations)):  # warm caches and prepared statements
        call(i)
        if after:
            after()
    samples = []
    for i in range(iterations):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
        if after:
            after()
    return name, samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(url: str, args: argparse.Namespace) -> None:
    timings: dict[str, float] = {}
    if not args.skip_fill:
        migrate(url)
        print(f"filling {args.certs:,} certificates over {args.things:,} things ...",
              file=sys.stderr)
        timings = fill(url, args.certs, args.things, args.heavy, args.revoked)

    engine = create_engine_for(url)
    store = Store(engine, SoftwareSealer())
    now = datetime.now(UTC)
    with psycopg.connect(_psycopg_dsn(url)) as conn:
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('certs')),"
            " (SELECT count(*) FROM certs WHERE revoked_at IS NULL),"
            " (SELECT count(*) FROM revoked_certs),"
            " (SELECT count(*) FROM revoked_certs WHERE expires_at > now()),"
            " (SELECT count(*) FROM certs WHERE thing_id = %s AND revoked_at IS NULL)",
            (HEAVY_THING,),
        ).fetchone()
        assert sizes is not None
        serials = [r[0] for r in conn.execute(
            "SELECT serial FROM certs TABLESAMPLE SYSTEM (2) WHERE revoked_at IS NULL LIMIT 20000")]
    size, active, revoked_total, on_crl, heavy_active = sizes
    random.seed(7)
    random.shuffle(serials)
    thing_ids = [f"thing-{random.randrange(1, args.things):05d}" for _ in range(args.iterations)]
    typical_total = store.list_by_thing(thing_ids[0]).total
    heavy_last = max(heavy_active - 10, 0)
    typical_last = max(typical_total - 10, 0)
    horizon = now + timedelta(days=30)
    state = store.crl_state()
    n = args.iterations

    def full_crl(_: int) -> int:
        return sum(1 for _ in store.iter_crl_entries(batch=10000))

    admin = psycopg.connect(_psycopg_dsn(url), autocommit=True)
    loop = asyncio.new_event_loop()

    def on_loop(read: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(read)

    def release_leases() -> None:  # a rotation would revoke what it claimed; here: give back
        admin.execute("UPDATE certs SET lease_owner = NULL, lease_expires_at = NULL"
                      " WHERE lease_owner IS NOT NULL")

    results = [
        measure("get by serial", lambda i: store.get(serials[i % len(serials)]), n),
        measure("page, typical thing, offset 0", lambda i: store.list_by_thing(thing_ids[i]), n),
        measure(f"page, typical thing, offset ~{typical_last}",
                lambda i: store.list_by_thing(thing_ids[i], offset=typical_last), n),
        measure(f"page, heavy thing ({heavy_active:,}), offset 0",
                lambda i: store.list_by_thing(HEAVY_THING), n),
        measure(f"page, heavy thing, offset {heavy_last:,}",
                lambda i: store.list_by_thing(HEAVY_THING, offset=heavy_last), n),
        measure("page, heavy thing, offsets 0..end (100 each)",
                lambda i: store.list_by_thing(HEAVY_THING, offset=(i * 100) % heavy_active), n),
        measure("count alone, heavy thing (offset past the end)",
                lambda i: store.list_by_thing(HEAVY_THING, offset=heavy_active + 10), n),
        measure("page, typical thing, serial filter 'ab'",
                lambda i: store.list_by_thing(thing_ids[i], serial="ab"), n),
        measure("claim 100 expiring (write, lease)",
                lambda i: store.claim_expiring(horizon, f"bench-{i}", limit=100,
                                               lease=timedelta(hours=1)),
                min(n, 500), after=release_leases),
        measure("CRL: one page of 1,000 entries",
                lambda i: store.crl_entries(after_seq=(i * 997) % max(state.revocation_seq
                                                                      - 1000, 1), limit=1000), n),
        measure("CRL: increment poll (after newest seq)",
                lambda i: store.crl_entries(after_seq=state.revocation_seq), n),
        measure(f"CRL: every current entry ({on_crl:,}) in 10k pages", full_crl, 30),
        # The reads the HTTP service makes on PostgreSQL, awaited on an event loop.
        measure("on the loop: get by serial",
                lambda i: on_loop(store.get_async(serials[i % len(serials)])), n),
        measure("on the loop: page, typical thing, offset 0",
                lambda i: on_loop(store.list_by_thing_async(thing_ids[i])), n),
        measure(f"on the loop: page, heavy thing, offset {heavy_last:,}",
                lambda i: on_loop(store.list_by_thing_async(HEAVY_THING, offset=heavy_last)), n),
        measure("on the loop: page, heavy thing, offsets 0..end",
                lambda i: on_loop(store.list_by_thing_async(
                    HEAVY_THING, offset=(i * 100) % heavy_active)), n),
        measure("on the loop: count alone, heavy thing",
                lambda i: on_loop(store.list_by_thing_async(HEAVY_THING,
                                                            offset=heavy_active + 10)), n),
    ]
    loop.run_until_complete(store.close_reads())
    loop.close()
    admin.close()
    engine.dispose()

    print(f"\ncertificates: {active + revoked_total:,} ({active:,} active, "
          f"{revoked_total:,} revoked of which {on_crl:,} unexpired), things: {args.things:,} "
          f"+ heavy thing with {heavy_active:,} active; certs table {size}")
    if timings:
        print("fill: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    print(f"\n{'operation':48} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, samples in results:
        print(f"{name:48} {len(samples):>6} {percentile(samples, 0.5):>8.2f} "
              f"{percentile(samples, 0.99):>8.2f} {statistics.fmean(samples):>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="PostgreSQL URL of an EMPTY database to fill (else a "
                                      "throwaway cluster is started)")
    parser.add_argument("--certs", type=int, default=1_000_000)
    parser.add_argument("--things", type=int, default=10_000)
    parser.add_argument("--heavy", type=int, default=20_000)
    parser.add_argument("--revoked", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--skip-fill", action="store_true",
                        help="measure a database this script filled before (with --url)")
    args = parser.parse_args()
    if args.url:
        run(args.url, args)
        return
    cluster = PostgresCluster(settings={"shared_buffers": "512MB", "max_wal_size": "4GB",
                                        "maintenance_work_mem": "512MB"})
    try:
        cluster.start()
        run(cluster.url(cluster.create_database("bench")), args)
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
