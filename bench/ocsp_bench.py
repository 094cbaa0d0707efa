"""OCSP benchmark: responses per second over HTTP against raw HSM signing in the same run.

Run: .venv/bin/python bench/ocsp_bench.py [--seconds 10] [--clients 1,4,16]

It starts everything itself as bench/http_bench.py does (SoftHSM2 token with an EC P-256 CA,
a throwaway PostgreSQL, the identity provider, `certs serve` with one worker per core), issues
one certificate, then drives POST /ocsp for it from keep-alive HTTP/1.1 clients. The ceiling is
the raw HSM signature (CKM_ECDSA over a SHA-256 digest) on all cores, measured in-process in the
same run; the signing core's whole response (status already known, no store) is shown too.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from bench.hsm_bench import CORES, rate  # noqa: E402
from bench.http_bench import CpuMeter  # noqa: E402
from hsm.authority import AuthorityConfig, CertificateAuthority  # noqa: E402
from hsm.connection import HsmConfig  # noqa: E402
from hsm.ocsp import GOOD, OcspResponder  # noqa: E402
from hsm.ocsp_request import parse_request  # noqa: E402
from tests.fixtures.ports import wait_for_port  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

PORT = 18214
THINGS_PORT, AUTH_PORT = 18193, 18191
VALIDITY = timedelta(hours=1)


async def _client(port: int, request: bytes, stop: float, latencies: list[float],
                  failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/ocsp-request"
            f"\r\nContent-Length: {len(request)}\r\n\r\n").encode()
    while time.monotonic() < stop:
        started = time.perf_counter()
        writer.write(head + request)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        # A signed answer is a few hundred bytes; a bare status (tryLater...) is five.
        if b" 200 " not in status_line or len(body) < 100:
            failures.append(1)
    writer.close()


async def load(port: int, clients: int, seconds: float, request: bytes) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, request, stop, latencies, failures)
                           for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"count": len(latencies), "rate": len(latencies) / elapsed,
            "p50": statistics.median(latencies) * 1000,
            "p99": latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000,
            "failures": len(failures)}


def ocsp_request(cert_pem: str, ca_pem: bytes) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issuer = x509.load_pem_x509_certificate(ca_pem)
    return (ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
            .build().public_bytes(Encoding.DER))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    state = Path(tempfile.mkdtemp(prefix="certs-ocsp-bench-"))
    from devtools.quickstart import prepare

    env = {**os.environ, **prepare(state)}
    env.update({"MF_THINGS_GRPC_URL": f"127.0.0.1:{THINGS_PORT}",
                "MF_AUTH_GRPC_URL": f"127.0.0.1:{AUTH_PORT}", "MF_CERTS_HTTP_PORT": str(PORT),
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
        token, thing = demo["users"][0]["token"], demo["things"][0]["id"]
        processes.append(subprocess.Popen([sys.executable, "-m", "server.cli", "serve"],
                                          env=env))
        wait_for_port(PORT, 60, process=processes[1])
        time.sleep(2)
        base = f"http://127.0.0.1:{PORT}"
        issued = httpx.post(f"{base}/certs", json={"thing_id": thing, "key_type": "ec"},
                            headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert issued.status_code == 201, issued.text
        ca_pem = httpx.get(f"{base}/ca.pem", timeout=30).content
        request = ocsp_request(issued.json()["certificate"], ca_pem)
        answer = ocsp.load_der_ocsp_response(httpx.post(f"{base}/ocsp", content=request,
                                                        timeout=30).content)
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD

        authority = CertificateAuthority(AuthorityConfig(
            hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                          pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                          token_label="certs", pool_size=CORES * 2),
            ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))
        responder = OcspResponder(authority.ca_certificate, authority.signer)
        parsed = parse_request(request)
        tbs = responder.response_data(parsed, [GOOD], datetime.now(UTC), VALIDITY)
        seconds = args.seconds
        raw = rate(lambda: responder.signer.sign(tbs), seconds / 2, CORES)
        core = rate(lambda: responder.sign_response(parsed, [GOOD], datetime.now(UTC),
                                                    VALIDITY), seconds / 2, CORES)
        print(f"cores: {CORES}; server: {CORES} worker processes, PostgreSQL, all on this "
              "machine\n")
        print(f"raw HSM signing (EC P-256, SHA-256) on {CORES} threads (ceiling): {raw:,.0f}/s")
        print(f"signing core, whole response, on {CORES} threads: {core:,.0f}/s "
              f"= {core / raw:.0%} of the ceiling")
        assert cluster.pid is not None
        meter = CpuMeter({"service": processes[1].pid, "PostgreSQL": cluster.pid})
        for count in clients:
            before = meter.snapshot()
            result = asyncio.run(load(PORT, count, seconds, request))
            used = meter.per_certificate(before, meter.snapshot(), result["count"])
            print(f"  HTTP POST /ocsp, {count:2d} clients: {result['rate']:,.0f} responses/s "
                  f"= {result['rate'] / raw:.0%} of raw signing; p50 {result['p50']:.1f} ms, "
                  f"p99 {result['p99']:.1f} ms; failures {result['failures']:.0f}")
            print(f"    {used.replace('per certificate', 'per response')}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        cluster.cleanup()


if __name__ == "__main__":
    main()
