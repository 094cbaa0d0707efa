"""EST benchmark: enrollments per second over HTTP against the in-process ceiling, and CSR
issuance (POST /certs with a csr) against server-side key issuance.

Run: .venv/bin/python bench/est_bench.py [--seconds 10] [--clients 1,4,16] [--csrs 3000]

It starts what bench/http_bench.py starts (a SoftHSM2 token with an EC P-256 CA, a throwaway
PostgreSQL cluster, the static identity provider, `certs serve` with one worker per core) and
makes EC P-256 keys and CSRs beforehand, so that the clients only send requests. Each client
keeps one HTTP/1.1 connection and sends the CSRs in turn (base64 DER to
/.well-known/est/simpleenroll with HTTP Basic and the thing key; PEM in the JSON body of
POST /certs with the user token). The ceiling, in the same run on all cores: the signing core
alone (a certificate for an already parsed key), and with the CSR parsed and its signature
checked first.
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from bench.hsm_bench import CORES, rate  # noqa: E402
from bench.http_bench import CpuMeter  # noqa: E402
from hsm.authority import AuthorityConfig, CertificateAuthority  # noqa: E402
from hsm.connection import HsmConfig  # noqa: E402
from hsm.csr import load_base64_csr  # noqa: E402
from tests.fixtures.ports import wait_for_port  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

PORT = 18224
THINGS_PORT, AUTH_PORT = 18193, 18191
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Csr:
    base64_der: bytes
    pem: str


def make_csrs(count: int) -> list[Csr]:
    """EC P-256 keys and their CSRs, made before any measurement."""
    made = []
    for index in range(count):
        key = ec.generate_private_key(ec.SECP256R1())
        request = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               f"device-{index}")]))
                   .sign(key, hashes.SHA256()))
        made.append(Csr(base64.encodebytes(request.public_bytes(serialization.Encoding.DER)),
                        request.public_bytes(serialization.Encoding.PEM).decode()))
    return made


def est_requests(csrs: list[Csr], thing_id: str, thing_key: str) -> list[bytes]:
    basic = base64.b64encode(f"{thing_id}:{thing_key}".encode()).decode()
    return [(f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: {HOST}\r\n"
             f"Authorization: Basic {basic}\r\nContent-Type: application/pkcs10\r\n"
             f"Content-Length: {len(csr.base64_der)}\r\n\r\n").encode() + csr.base64_der
            for csr in csrs]


def issue_requests(bodies: list[dict[str, object]], token: str) -> list[bytes]:
    encoded = [json.dumps(body).encode() for body in bodies]
    return [(f"POST /certs HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
             ).encode() + body for body in encoded]


async def _client(requests: list[bytes], start: int, expect: bytes, stop: float,
                  latencies: list[float], failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, PORT)
    index = start
    while time.monotonic() < stop:
        started = time.perf_counter()
        writer.write(requests[index % len(requests)])
        index += 1
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if expect not in status_line:
            failures.append(1)
    writer.close()


async def load(requests: list[bytes], clients: int, seconds: float, expect: int
               ) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    spread = len(requests) // max(clients, 1)
    await asyncio.gather(*(_client(requests, n * spread, f" {expect} ".encode(), stop,
                                   latencies, failures) for n in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"count": len(latencies), "rate": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
            "failures": len(failures)}


def report(label: str, result: dict[str, float], ceiling: float) -> None:
    print(f"  {label}: {result['rate']:,.1f} certs/s = {result['rate'] / ceiling:.0%} of the "
          f"ceiling; p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; "
          f"failures {result['failures']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--csrs", type=int, default=3000)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    started = time.perf_counter()
    csrs = make_csrs(args.csrs)
    print(f"{len(csrs)} EC P-256 CSRs made beforehand in {time.perf_counter() - started:.1f} s")
    state = Path(tempfile.mkdtemp(prefix="certs-est-bench-"))
    from devtools.quickstart import prepare

    env = {**os.environ, **prepare(state)}
    env.update({"MF_THINGS_GRPC_URL": f"{HOST}:{THINGS_PORT}",
                "MF_AUTH_GRPC_URL": f"{HOST}:{AUTH_PORT}", "MF_CERTS_HTTP_PORT": str(PORT),
                "MF_CERTS_LOG_LEVEL": "error", "MF_CERTS_WORKERS": str(CORES)})
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    cluster = PostgresCluster().start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        env["MF_CERTS_DB_URL"] = cluster.url(cluster.create_database("bench"))
        identity_file = state / "identity.json"
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "devtools.identity.provider", "--file", str(identity_file),
             "--demo", "--things-addr", env["MF_THINGS_GRPC_URL"],
             "--auth-addr", env["MF_AUTH_GRPC_URL"], "--log-level", "error"],
            env=env, stdout=subprocess.DEVNULL))
        wait_for_port(THINGS_PORT, 30, process=processes[0])
        demo = json.loads(identity_file.read_text())
        token, thing = demo["users"][0]["token"], demo["things"][0]
        processes.append(subprocess.Popen([sys.executable, "-m", "server.cli", "serve"],
                                          env=env))
        wait_for_port(PORT, 60, process=processes[1])
        time.sleep(2)

        authority = CertificateAuthority(AuthorityConfig(
            hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                          pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                          token_label="certs", pool_size=CORES * 2),
            ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))
        ttl = timedelta(hours=100)
        keys = itertools.cycle([load_base64_csr(csr.base64_der).key for csr in csrs])
        bodies = itertools.cycle([csr.base64_der for csr in csrs])
        signing = rate(lambda: authority.issue("thing", next(keys), ttl), args.seconds / 2,
                       CORES)
        parsing = rate(lambda: authority.issue("thing", load_base64_csr(next(bodies)).key, ttl),
                       args.seconds / 2, CORES)
        print(f"cores: {CORES}; server: {CORES} worker processes, PostgreSQL, identity "
              f"provider, all on this machine")
        print(f"in-process on {CORES} threads: signing core alone {signing:,.1f}/s (the "
              f"ceiling); CSR parsed and checked, then signed {parsing:,.1f}/s\n")
        assert cluster.pid is not None
        meter = CpuMeter({"service": processes[1].pid, "identity provider": processes[0].pid,
                          "PostgreSQL": cluster.pid})

        print("EST simpleenroll (HTTP Basic with the thing key, base64 DER CSR):")
        enrolls = est_requests(csrs, thing["id"], thing["key"])
        for count in clients:
            before = meter.snapshot()
            result = asyncio.run(load(enrolls, count, args.seconds, 200))
            report(f"{count:2d} clients", result, signing)
            print(f"    {meter.per_certificate(before, meter.snapshot(), result['count'])}")

        print("\nPOST /certs with a csr (user token) against a key made by the server:")
        with_csr = issue_requests([{"thing_id": thing["id"], "csr": csr.pem, "ttl": "100h"}
                                   for csr in csrs], token)
        server_key = issue_requests([{"thing_id": thing["id"], "key_type": "ec",
                                      "key_bits": 256, "ttl": "100h"}], token)
        for count in clients:
            report(f"{count:2d} clients, csr       ",
                   asyncio.run(load(with_csr, count, args.seconds, 201)), signing)
            report(f"{count:2d} clients, server key",
                   asyncio.run(load(server_key, count, args.seconds, 201)), signing)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        cluster.cleanup()


if __name__ == "__main__":
    main()
