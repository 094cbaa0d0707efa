"""EST benchmark: enrollments per second over HTTP against the in-process ceiling, and CSR
issuance (POST /certs with a csr) against server-side key issuance.

Run: .venv/bin/python bench/est_bench.py [--seconds 10] [--clients 1,4,16] [--csrs 3000]

It starts the bench stack (bench/stack.py: a SoftHSM2 token with an EC P-256 CA, a throwaway
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
import sys
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
from bench.stack import BenchStack, CpuMeter, load, status_is  # noqa: E402
from hsm.csr import load_base64_csr  # noqa: E402

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


def thing_with_key(env: dict[str, str]) -> dict[str, str]:
    """The first demo thing with its key (EST authenticates with it), from the identity
    provider's file in the stack's state folder."""
    demo = json.loads((Path(env["MF_CERTS_SIGN_CA_PATH"]).parent / "identity.json").read_text())
    thing: dict[str, str] = demo["things"][0]
    return thing


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
    with BenchStack(PORT, THINGS_PORT, AUTH_PORT, prefix="certs-est-bench-") as stack:
        env, token = stack.env, stack.token
        thing = thing_with_key(env)
        service = stack.serve()

        authority = stack.authority()
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
        meter = CpuMeter(stack.components(service))

        print("EST simpleenroll (HTTP Basic with the thing key, base64 DER CSR):")
        enrolls = est_requests(csrs, thing["id"], thing["key"])
        for count in clients:
            before = meter.snapshot()
            result = asyncio.run(load(PORT, enrolls, count, args.seconds,
                                      status_is(200)))
            report(f"{count:2d} clients", result, signing)
            spent = CpuMeter.per_request(before, meter.snapshot(), result["count"])
            print(f"    {CpuMeter.describe(spent)}")

        print("\nPOST /certs with a csr (user token) against a key made by the server:")
        with_csr = issue_requests([{"thing_id": thing["id"], "csr": csr.pem, "ttl": "100h"}
                                   for csr in csrs], token)
        server_key = issue_requests([{"thing_id": thing["id"], "key_type": "ec",
                                      "key_bits": 256, "ttl": "100h"}], token)
        for count in clients:
            report(f"{count:2d} clients, csr       ",
                   asyncio.run(load(PORT, with_csr, count, args.seconds,
                                    status_is(201))), signing)
            report(f"{count:2d} clients, server key",
                   asyncio.run(load(PORT, server_key, count, args.seconds, status_is(201))),
                   signing)


if __name__ == "__main__":
    main()
