"""OCSP benchmark: responses per second over HTTP against raw HSM signing in the same run.

Run: .venv/bin/python bench/ocsp_bench.py [--seconds 10] [--clients 1,4,16] [--profile DIR]
     [--code DIR]

It starts the bench stack (bench/stack.py: SoftHSM2 token with an EC P-256 CA, a throwaway
PostgreSQL, the identity provider, `certs serve` with one worker per core), issues 20
certificates, then drives POST /ocsp from keep-alive HTTP/1.1 clients, each asking about its
own certificate: once without a nonce (a response may be reused while the status in the store
is unchanged, RFC 5019) and once with a fresh nonce in every request (each one signed in the
HSM). The ceiling is the raw HSM signature (CKM_ECDSA over a SHA-256 digest) on all cores,
measured in-process in the same run; the signing core's whole response (status already known,
no store) is shown too. ``--profile DIR`` samples one worker with py-spy (native frames) during
each 16-client run and prints the top entries (the figures of a profiled run are slowed).
``--code DIR`` runs the service from another checkout, all else from this one: e.g. a
`git worktree` whose server/worker.py returns ``with_ocsp_front(create_app(...))``
(server/http/ocsp_asgi.py) to measure the OCSP front before the service is wired to it.
"""

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from bench.hsm_bench import CORES, rate  # noqa: E402
from bench.sampling import record_profile, summarize  # noqa: E402
from bench.stack import BenchStack, CpuMeter, http_request, load, worker_pids  # noqa: E402
from hsm.ocsp import GOOD, OcspResponder  # noqa: E402
from hsm.ocsp_request import parse_request  # noqa: E402

PORT = 18214
THINGS_PORT, AUTH_PORT = 18193, 18191
VALIDITY = timedelta(hours=1)
CERTIFICATES = 20
NONCES_PER_CERTIFICATE = 50


def ocsp_request(cert_pem: str, ca_pem: bytes, nonce: bytes | None = None) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issuer = x509.load_pem_x509_certificate(ca_pem)
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def signed_answer(status_line: bytes, body: bytes) -> bool:
    """A signed answer is a few hundred bytes; a bare status (tryLater...) is five."""
    return status_line.split(b" ", 2)[1:2] == [b"200"] and len(body) > 100


def ceiling(stack: BenchStack, request: bytes, seconds: float) -> tuple[float, float]:
    """Raw HSM signatures per second on all cores, and whole signed responses per second."""
    authority = stack.authority()
    responder = OcspResponder(authority.ca_certificate, authority.signer)
    parsed = parse_request(request)
    tbs = responder.response_data(parsed, [GOOD], datetime.now(UTC), VALIDITY)
    raw = rate(lambda: responder.signer.sign(tbs), seconds, CORES)
    core = rate(lambda: responder.sign_response(parsed, [GOOD], datetime.now(UTC), VALIDITY),
                seconds, CORES)
    return raw, core


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles of one worker")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout the service runs from (default: this one)")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    with BenchStack(PORT, THINGS_PORT, AUTH_PORT, prefix="certs-ocsp-bench-") as stack:
        service = stack.serve(code=args.code.resolve())
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        connection.request("GET", "/ca.pem")
        ca_pem = connection.getresponse().read()
        certificates = [stack.issue(stack.things[0])["certificate"]
                        for _ in range(CERTIFICATES)]
        plain = [ocsp_request(pem, ca_pem) for pem in certificates]
        # Client n starts at request n and steps through the list: with 20 certificates and
        # 50 nonces each, consecutive requests of one client differ in nonce and certificate.
        with_nonce = [ocsp_request(pem, ca_pem, os.urandom(16))
                      for _ in range(NONCES_PER_CERTIFICATE) for pem in certificates]
        connection.request("POST", "/ocsp", plain[0],
                           {"Content-Type": "application/ocsp-request"})
        answer = ocsp.load_der_ocsp_response(connection.getresponse().read())
        assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
        connection.close()

        raw, core = ceiling(stack, plain[0], args.seconds / 2)
        print(f"cores: {CORES}; server: {stack.env['MF_CERTS_WORKERS']} worker processes, "
              f"PostgreSQL, load client, all on this machine; service code: {args.code}\n")
        print(f"raw HSM signing (EC P-256, SHA-256) on {CORES} threads (ceiling): {raw:,.0f}/s")
        print(f"signing core, whole response, on {CORES} threads: {core:,.0f}/s "
              f"= {core / raw:.0%} of the ceiling")
        meter = CpuMeter(stack.components(service))
        plans = [("no nonce", plain), ("nonce", with_nonce)]
        for label, bodies in plans:
            requests = [http_request("POST", "/ocsp", body=body,
                                     content_type="application/ocsp-request")
                        for body in bodies]
            print(f"\nHTTP POST /ocsp, {label}:")
            for count in clients:
                spy = None
                name = f"{label.replace(' ', '-')}-{count}.txt"
                if args.profile is not None and count == max(clients):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = record_profile(worker_pids(service.pid)[0], args.seconds,
                                   args.profile / name)
                before = meter.snapshot()
                result = asyncio.run(load(PORT, requests, count, args.seconds, signed_answer))
                spent = CpuMeter.per_request(before, meter.snapshot(), result["count"])
                print(f"  {count:2d} clients: {result['rate']:,.0f} responses/s "
                      f"= {result['rate'] / raw:.0%} of raw signing; p50 {result['p50']:.1f} ms,"
                      f" p99 {result['p99']:.1f} ms; failures {result['failures']:.0f}")
                print(f"    {CpuMeter.describe(spent, 'response')}", flush=True)
                if spy is not None:
                    spy.wait(timeout=60)
                    profile = args.profile / name
                    if profile.exists():
                        print(f"profile of one worker ({profile}):\n{summarize(profile)}",
                              flush=True)


if __name__ == "__main__":
    main()
