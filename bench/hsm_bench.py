"""Signing-core benchmark: raw HSM rates, certificates through the core, CRL build times.

Run: .venv/bin/python bench/hsm_bench.py [--seconds 3] [--module softhsm,tpm2]
It makes its own token of each module in a temporary directory (tpm2: a software TPM behind
tpm2-abrmd, devtools/tpm2.py). Every rate is also printed as a ratio to a ceiling measured in
the same run; with several modules, the raw signing and certificate rates end in a table side
by side.
"""

import argparse
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from devtools import softhsm, tpm2
from hsm.authority import AuthorityConfig, CertificateAuthority
from hsm.ca_certificate import create_ca
from hsm.client_keys import generate_client_key
from hsm.connection import HsmConfig, HsmConnection
from hsm.crl import revoked_entry

CORES = os.cpu_count() or 1
PIN = "bench-pin"


def rate(work: Callable[[], object], seconds: float, threads: int = 1) -> float:
    """Operations per second of ``work`` called in a loop on ``threads`` threads."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            work()
            counts[index] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - started)


def make_ca(connection: HsmConnection, config: HsmConfig, state: Path, kind: str,
            size: int) -> CertificateAuthority:
    label = f"bench-{kind}-{size}"
    path = create_ca(connection, label, kind, size, label, state / f"{label}.pem")
    return CertificateAuthority(
        AuthorityConfig(hsm=config, ca_certificate_path=str(path), ca_key_label=label,
                        crl_url="http://localhost:8204/crl"),
        connection=connection,
    )


def _free_port_pair() -> int:
    """A port below the ephemeral range whose successor is free too (swtpm uses both)."""
    for port in range(23000, 24000, 2):
        try:
            for candidate in (port, port + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise SystemExit("no free port pair in 23000-23999")


def open_module(name: str, state: Path, tpms: list[tpm2.SoftwareTpm]) -> HsmConfig:
    """A fresh token of module ``name`` ("softhsm" or "tpm2") in ``state``."""
    if name == "softhsm":
        config_path = softhsm.write_config(state)
        softhsm.init_token(config_path, "bench", PIN, "bench-so")
        os.environ["SOFTHSM2_CONF"] = str(config_path)
        module = softhsm.find_module()
    elif name == "tpm2":
        tpm = tpm2.start(state, _free_port_pair())
        tpms.append(tpm)
        tpm2.init_token(tpm, "bench", PIN, "bench-so")
        os.environ.update(tpm.env)
        module = tpm2.find_module()
    else:
        raise SystemExit(f"unknown module {name!r} (softhsm, tpm2)")
    return HsmConfig(module_path=module, pin=PIN, token_label="bench", pool_size=CORES * 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--module", default="softhsm",
                        help="comma-separated PKCS#11 modules: softhsm, tpm2")
    parser.add_argument("--no-crl", action="store_true", help="skip the CRL build times")
    args = parser.parse_args()
    tpms: list[tpm2.SoftwareTpm] = []
    summary: dict[str, dict[str, float]] = {}
    try:
        for name in args.module.split(","):
            summary[name] = bench_module(name, args.seconds, tpms, crl=not args.no_crl)
    finally:
        for tpm in tpms:
            tpm.stop()
    if len(summary) > 1:
        names = list(summary)
        print("\n| rate (/s) | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for row in summary[names[0]]:
            print(f"| {row} | " + " | ".join(f"{summary[n].get(row, 0):,.1f}" for n in names)
                  + " |")


def bench_module(name: str, seconds: float, tpms: list[tpm2.SoftwareTpm], *,
                 crl: bool) -> dict[str, float]:
    """Every measurement on a token of module ``name``; returns the side-by-side rates."""
    state = Path(tempfile.mkdtemp(prefix=f"certs-bench-{name}-"))
    config = open_module(name, state, tpms)
    connection = HsmConnection(config)
    ec_ca = make_ca(connection, config, state, "ec", 256)
    rsa_ca = make_ca(connection, config, state, "rsa", 2048)
    summary: dict[str, float] = {}
    print(f"== {name}: cores: {CORES}, {seconds:.0f} s per measurement, token in {state}\n")

    digest_message = os.urandom(64)
    raw: dict[str, float] = {}
    for key_name, ca in (("P-256", ec_ca), ("RSA-2048", rsa_ca)):
        for threads in (1, CORES):
            raw[f"{key_name}/{threads}"] = rate(lambda ca=ca: ca.signer.sign(digest_message),
                                                seconds, threads)
            print(f"raw HSM {key_name} signatures, {threads} thread(s): "
                  f"{raw[f'{key_name}/{threads}']:,.0f}/s")
            summary[f"raw {key_name} signatures, {threads} thread(s)"] = raw[
                f"{key_name}/{threads}"]

    keygen_ec = rate(lambda: generate_client_key("ec", 256), seconds)
    keygen_rsa = rate(lambda: rsa.generate_private_key(65537, 2048), seconds * 2, CORES)
    print(f"client key generation EC P-256, 1 thread: {keygen_ec:,.0f}/s")
    print(f"client key generation RSA-2048, {CORES} threads: {keygen_rsa:,.1f}/s\n")

    ttl = timedelta(hours=2048)
    for ca_name, ca in (("EC P-256 CA", ec_ca), ("RSA-2048 CA", rsa_ca)):
        ceiling_name = "P-256" if ca is ec_ca else "RSA-2048"
        for threads in (1, CORES):
            ec_rate = rate(lambda ca=ca: ca.issue("thing", generate_client_key("ec", 256), ttl),
                           seconds, threads)
            ceiling = raw[f"{ceiling_name}/{threads}"]
            print(f"EC P-256 client certs, {ca_name}, {threads} thread(s): {ec_rate:,.0f}/s "
                  f"= {ec_rate / ceiling:.0%} of raw HSM {ceiling_name} ({threads} thread(s)); "
                  f"{ec_rate / raw['P-256/1']:.0%} of one-thread raw P-256")
            summary[f"EC P-256 certs, {ca_name}, {threads} thread(s)"] = ec_rate
        rsa_rate = rate(lambda ca=ca: ca.issue("thing", generate_client_key("rsa", 2048), ttl),
                        seconds * 2, CORES)
        print(f"RSA-2048 client certs, {ca_name}, {CORES} threads: {rsa_rate:,.1f}/s "
              f"= {rsa_rate / keygen_rsa:.0%} of all-core RSA-2048 key generation")
        summary[f"RSA-2048 certs, {ca_name}, {CORES} threads"] = rsa_rate
    print()
    if not crl:
        return summary

    now = datetime.now(UTC)
    for count in (100_000, 1_000_000):
        started = time.perf_counter()
        first = 10**40
        entries = [revoked_entry(serial, now - timedelta(seconds=serial - first),
                                 "superseded" if serial % 3 else None)
                   for serial in range(first, first + count)]
        encoded = time.perf_counter() - started
        for ca_name, ca in (("EC P-256 CA", ec_ca), ("RSA-2048 CA", rsa_ca)):
            started = time.perf_counter()
            signed = ca.crls.build(entries, 1, now, now + timedelta(hours=24))
            built = time.perf_counter() - started
            print(f"CRL {count:,} entries, {ca_name}: encode entries {encoded:.2f} s "
                  f"(done once per revocation by the publisher), build+sign from encoded "
                  f"entries {built:.2f} s, both {encoded + built:.2f} s, "
                  f"{len(signed) / 1e6:.1f} MB")
    print()
    return summary


if __name__ == "__main__":
    main()
