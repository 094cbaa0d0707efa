"""HTTP issuance benchmark: certificates per second over HTTP against the in-process ceiling.

Run: .venv/bin/python bench/http_bench.py [--seconds 10] [--clients 1,4,16] [--no-rsa]
     [--rounds N] [--profile DIR]

It starts the bench stack of bench/stack.py on this machine (a SoftHSM2 token with an EC P-256
CA, a throwaway PostgreSQL cluster, the demo identity provider over gRPC, `certs serve` with one
worker per core), then drives POST /certs from keep-alive asyncio HTTP/1.1 clients. In the same
run it measures the signing core in-process on all cores (the ceiling) and reports the HTTP rate
as a ratio to it. For EC it also prints the CPU time each component (service, identity provider,
PostgreSQL, load client) spent per certificate, read from /proc. EC runs twice in the same run:
tracing off, then tracing on with every request sampled and the spans exported over OTLP/HTTP
to a dummy collector in a process of its own; the last lines give what tracing cost.
``--rounds N`` runs the two EC phases N times, alternating (the database grows as it goes, and the
machine's load moves), and the cost is taken from the median rates.
``--profile DIR`` also samples one worker with py-spy (native frames) during each EC run with
the most clients, writes DIR/ec-<tracing>.txt and prints the top entries (a profiled run is
slowed by the sampling).
"""

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hsm_bench import CORES, rate  # noqa: E402
from bench.sampling import record_profile, summarize  # noqa: E402
from bench.stack import (  # noqa: E402
    BenchStack,
    CpuMeter,
    http_request,
    load,
    status_is,
    worker_pids,
)
from hsm.authority import AuthorityConfig, CertificateAuthority  # noqa: E402
from hsm.client_keys import generate_client_key  # noqa: E402
from hsm.connection import HsmConfig  # noqa: E402

PORT = 18204
THINGS_PORT, AUTH_PORT = 18183, 18181
SINK_PORT = 18318


def _sink(port: int, spans_bytes: Any) -> None:
    """A dummy OTLP/HTTP collector: takes every export and answers 200 (its own process)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with spans_bytes.get_lock():
                spans_bytes.value += len(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _ceiling(stack: BenchStack, key_type: str, bits: int, seconds: float) -> float:
    env = stack.env
    authority = CertificateAuthority(AuthorityConfig(
        hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                      pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                      token_label="certs", pool_size=CORES * 2),
        ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))
    ttl = timedelta(hours=100)
    return rate(lambda: authority.issue("thing", generate_client_key(key_type, bits), ttl),
                seconds, CORES)


def _line(count: int, result: dict[str, float], ceiling: float) -> str:
    return (f"  HTTP, {count:2d} clients: {result['rate']:,.1f} certs/s "
            f"= {result['rate'] / ceiling:.0%} of the ceiling; "
            f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
            f"(p99/p50 {result['p99'] / max(result['p50'], 1e-9):.1f}); "
            f"failures {result['failures']:.0f}")


def _run_ec(label: str, clients: list[int], seconds: float, request: bytes, ceiling: float,
            stack: BenchStack, service: Any, profile: Path | None) -> dict[int, float]:
    print(f"EC-256, {label}:")
    components = stack.components(service)
    meter = CpuMeter({"service": components["service"],
                      "identity provider": components["identity"],
                      "PostgreSQL": components["PostgreSQL"]})
    rates = {}
    for count in clients:
        spy = out = None
        if profile is not None and count == max(clients):
            profile.mkdir(parents=True, exist_ok=True)
            out = profile / f"ec-{label.split(' (')[0].replace(' ', '-')}.txt"
            spy = record_profile(worker_pids(service.pid)[0], seconds, out)
        before = meter.snapshot()
        result = asyncio.run(load(PORT, [request], count, seconds, status_is(201)))
        spent = CpuMeter.per_request(before, meter.snapshot(), result["count"])
        rates[count] = result["rate"]
        print(_line(count, result, ceiling))
        print(f"    {CpuMeter.describe(spent)}", flush=True)
        if spy is not None and out is not None:
            spy.wait(timeout=60)
            if out.exists():
                print(f"  profile of one worker ({out}):\n{summarize(out)}", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--no-rsa", action="store_true", help="EC only")
    parser.add_argument("--rounds", type=int, default=1,
                        help="EC with tracing off and on this many times, alternating")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles of one worker")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    exported = multiprocessing.Value("q", 0)
    sink = multiprocessing.Process(target=_sink, args=(SINK_PORT, exported), daemon=True)
    sink.start()
    try:
        with BenchStack(PORT, THINGS_PORT, AUTH_PORT, prefix="certs-http-bench-") as stack:
            thing = stack.things[0]
            print(f"cores: {CORES}; server: {CORES} worker processes, PostgreSQL, identity "
                  f"provider, all on this machine\n")
            ceilings = {}
            for key_type, bits in (("ec", 256), ("rsa", 2048)):
                if key_type == "rsa" and args.no_rsa:
                    continue
                ceilings[key_type] = _ceiling(stack, key_type, bits, args.seconds / 2)
                print(f"{key_type.upper()}-{bits} client certs in-process on {CORES} threads "
                      f"(ceiling): {ceilings[key_type]:,.1f}/s")

            def issue(key_type: str, bits: int) -> bytes:
                body = json.dumps({"thing_id": thing, "key_type": key_type, "key_bits": bits,
                                   "ttl": "100h"}).encode()
                return http_request("POST", "/certs", token=stack.token, body=body)

            traced = {"MF_JAEGER_URL": f"http://127.0.0.1:{SINK_PORT}",
                      "OTEL_TRACES_SAMPLER": "always_on"}
            rates: dict[str, list[dict[int, float]]] = {}
            phases = (("tracing off", {}),
                      ("tracing on (every request sampled, OTLP/HTTP to a local sink)", traced))
            for round_number in range(args.rounds):
                for label, extra in phases:
                    service = stack.serve(extra)
                    try:
                        rates.setdefault(label, []).append(_run_ec(
                            label, clients, args.seconds, issue("ec", 256), ceilings["ec"],
                            stack, service, args.profile if round_number == 0 else None))
                        if not extra and "rsa" in ceilings and round_number == 0:
                            print("RSA-2048, tracing off:")
                            for count in clients:
                                result = asyncio.run(load(PORT, [issue("rsa", 2048)], count,
                                                          args.seconds, status_is(201)))
                                print(_line(count, result, ceilings["rsa"]), flush=True)
                    finally:
                        stack.stop(service)
            off, on = ({count: statistics.median(run[count] for run in runs)
                        for count in clients} for runs in rates.values())
            median = " (median rates)" if args.rounds > 1 else ""
            print("\ntracing on costs: " + ", ".join(
                f"{count} clients {1 - on[count] / off[count]:.0%}" for count in clients)
                + f" of the rate{median}")
            print(f"OTLP bytes received by the sink: {exported.value:,}")
    finally:
        sink.terminate()


if __name__ == "__main__":
    main()
