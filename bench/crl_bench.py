"""CRL benchmark on a real store: publish time at 100k and 1M revoked entries, and the time
from a revocation to a CRL on disk that lists it while certificates are being issued.

Run: .venv/bin/python bench/crl_bench.py [--sqlite] [--sizes 100000,1000000] [--latency 20]

It makes its own SoftHSM2 token (EC P-256 CA, or --ca-rsa for RSA 2048) and, by default, a
throwaway PostgreSQL 15 cluster (the test suite's helper); --sqlite uses a SQLite file
instead. Revocations are bulk-inserted with SQL (COPY on PostgreSQL; the scheduler tests'
helper), as committed revocations of certificates the CRL needs no more of than the
revoked_certs row.

Measured, through the service's own CrlPublisher (authority/crl_publisher.py):
- first publish over bulk-inserted revocations, which have no stored CRL entry yet (as after
  migration 0006): it encodes every entry and stores it (PostgreSQL: then VACUUM ANALYZE, as
  autovacuum would after such a rewrite);
- first publish of a new publisher (a process that starts): reads the stored entries, has the
  HSM sign, stores the CRL, writes PEM; also split into its phases (read the stored entries
  in blocks, build + sign, PEM + atomic write);
- incremental republish: one more revocation through Store.revoke, then ensure_covers;
- revocation to CRL at the first size: Store.revoke then ensure_covers (the CRL on disk lists
  it when that returns) while another thread issues and stores EC certificates.
"""

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine

from authority.crl_publisher import READ_BATCH, CrlPublisher
from authority.files import write_atomically
from devtools import softhsm
from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.ca_certificate import create_ca
from hsm.client_keys import generate_client_key
from hsm.connection import HsmConfig, HsmConnection
from hsm.der import pem
from repository import NewCertificate, RevocationReason, Store, create_engine_for, migrate

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.stack import tree_cpu_seconds  # noqa: E402
from tests.scheduler.helpers import bulk_revocations  # noqa: E402

PIN = "bench-pin"
T = TypeVar("T")


def timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def make_authority(state: Path, rsa: bool) -> CertificateAuthority:
    config_path = softhsm.write_config(state)
    softhsm.init_token(config_path, "bench", PIN, "bench-so-pin")
    os.environ["SOFTHSM2_CONF"] = str(config_path)
    config = HsmConfig(module_path=softhsm.find_module(), pin=PIN, token_label="bench",
                       pool_size=4, wait_seconds=10.0)
    connection = HsmConnection(config)
    kind, size = ("rsa", 2048) if rsa else ("ec", 256)
    path = create_ca(connection, "bench-ca", kind, size, "Bench CA", state / "ca.pem")
    return CertificateAuthority(AuthorityConfig(hsm=config, ca_certificate_path=str(path),
                                                ca_key_label="bench-ca"), connection=connection)


def issue_and_save(authority: CertificateAuthority, store: Store, thing: str) -> str:
    issued = authority.issue(thing, generate_client_key("ec", 256), timedelta(days=30))
    store.save(NewCertificate(
        serial=issued.serial_hex, thing_id=thing, certificate_pem=issued.certificate_pem,
        private_key_pem=issued.private_key_pem, private_key_type="ec", key_bits=256,
        not_before=issued.not_before, expires_at=issued.not_after))
    return issued.serial_hex


def phases(authority: CertificateAuthority, store: Store, path: Path) -> str:
    """The steps of a first publish from stored entries, timed one by one (the publisher's
    store reads; the bench fills in no missing entry)."""
    now = datetime.now(UTC).replace(microsecond=0)

    def read() -> list[bytes]:
        found: list[bytes] = []
        after, through = 0, store.crl_state().revocation_seq
        while True:
            block = store.crl_entry_block(after_seq=after, through_seq=through,
                                          limit=READ_BATCH, now=now)
            found.append(block.der)
            if len(block) < READ_BATCH:
                return found
            after = block.seqs[-1]

    encoded, read_time = timed(read)
    der, sign = timed(lambda: authority.crls.build(encoded, 1, now, now + timedelta(hours=24)))
    _, write = timed(lambda: write_atomically(path, pem(der, "X509 CRL")))
    return (f"read stored entries {read_time:.2f} s, build + sign {sign:.2f} s, "
            f"PEM + write {write:.2f} s; {len(der) / 1e6:.1f} MB DER")


def latency(authority: CertificateAuthority, store: Store, publisher: CrlPublisher,
            rounds: int) -> str:
    victims = [issue_and_save(authority, store, f"victim-{i}") for i in range(rounds)]
    stop = threading.Event()
    issued = [0]

    def issue_loop() -> None:
        while not stop.is_set():
            issue_and_save(authority, store, "busy-thing")
            issued[0] += 1

    worker = threading.Thread(target=issue_loop, daemon=True)
    worker.start()
    samples = []
    started = time.perf_counter()
    try:
        for serial in victims:
            begin = time.perf_counter()
            revocation = store.revoke(serial, reason=RevocationReason.KEY_COMPROMISE)
            crl = publisher.ensure_covers(revocation.seq)
            samples.append(time.perf_counter() - begin)
            assert crl.revocation_seq >= revocation.seq
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join()
    elapsed = time.perf_counter() - started
    samples.sort()
    p95 = samples[max(0, round(len(samples) * 0.95) - 1)]
    return (f"revocation -> CRL on disk, {len(samples)} revocations: median "
            f"{statistics.median(samples) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max "
            f"{samples[-1] * 1000:.0f} ms; issuance meanwhile {issued[0] / elapsed:.0f} certs/s")


def vacuum(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE revoked_certs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--latency", type=int, default=20, help="revocations to time")
    parser.add_argument("--ca-rsa", action="store_true", help="RSA 2048 CA (default EC P-256)")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))

    work = Path(tempfile.mkdtemp(prefix="crl-bench-"))
    authority = make_authority(work, args.ca_rsa)
    cluster = None
    if args.sqlite:
        url = f"sqlite:///{work / 'certs.db'}"
    else:
        from tests.fixtures.postgres import PostgresCluster

        cluster = PostgresCluster().start()
        url = cluster.url(cluster.create_database("bench"))
    def server_cpu() -> float:
        """CPU time of the PostgreSQL cluster's processes (the backends serving the store)."""
        return tree_cpu_seconds(cluster.pid) if cluster is not None and cluster.pid else 0.0

    try:
        migrate(url)
        store = Store(create_engine_for(url), authority.sealer)
        loader = create_engine_for(url, statement_timeout_ms=0)  # COPY of a million rows
        backend = "SQLite" if args.sqlite else "PostgreSQL 15"
        ca = "RSA 2048" if args.ca_rsa else "EC P-256"
        print(f"{backend}, {ca} CA in SoftHSM2, {os.cpu_count()} cores\n")
        for size in sizes:
            missing = size - store.crl_state().revocation_seq
            _, insert_time = timed(functools.partial(bulk_revocations, loader, missing))
            print(f"{size:,} revoked entries (bulk insert {insert_time:.1f} s)")
            path = work / f"crl-{size}.pem"
            publisher = CrlPublisher(authority, store, str(path), timedelta(hours=24))
            crl, upgrade = timed(publisher.publish)
            print(f"  first publish over revocations stored without their entry (once after "
                  f"migration 0006: encodes and stores them): {upgrade:.2f} s")
            if not args.sqlite:
                # That rewrote every row: clear the dead versions as autovacuum does after it,
                # so that what follows measures the steady state.
                _, vacuum_time = timed(functools.partial(vacuum, loader))
                print(f"  VACUUM ANALYZE revoked_certs: {vacuum_time:.1f} s")
            publisher = CrlPublisher(authority, store, str(path), timedelta(hours=24))
            cpu, server = time.process_time(), server_cpu()
            crl, first = timed(publisher.publish)
            in_server = (f", {server_cpu() - server:.2f} s in PostgreSQL"
                         if cluster is not None else "")
            print(f"  first publish of a process: {first:.2f} s, {time.process_time() - cpu:.2f}"
                  f" s CPU in the process{in_server} ({crl.entries:,} entries, "
                  f"{path.stat().st_size / 1e6:.1f} MB PEM)")
            print(f"    phases: {phases(authority, store, work / 'phases.pem')}")
            serial = issue_and_save(authority, store, "one-more")
            revocation = store.revoke(serial)
            crl, again = timed(functools.partial(publisher.ensure_covers, revocation.seq))
            print(f"  incremental republish after one revocation: {again:.2f} s "
                  f"({crl.entries:,} entries)")
            if size == sizes[0] and args.latency:
                print(f"  {latency(authority, store, publisher, args.latency)}")
            print()
    finally:
        if cluster is not None:
            cluster.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
