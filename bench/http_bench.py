"""HTTP issuance benchmark: certificates per second over HTTP against the in-process ceiling.

Run: .venv/bin/python bench/http_bench.py [--seconds 10] [--clients 1,4,16] [--no-rsa]
     [--rounds N] [--profile DIR]

It starts the bench stack of bench/stack.py on this machine (a SoftHSM2 token with an EC P-256
CA, a throwaway PostgreSQL cluster, the demo identity provider over gRPC, `certs serve` with one
worker per core), then drives POST /certs from keep-alive asyncio HTTP/1.1 clients. In the same
run it measures the signing core in-process on all cores (the ceiling) and reports the HTTP rate
as a ratio to it. For EC it also prints the CPU time each component (service, identity provider,
PostgreSQL, load client) spent per certificate, read from /proc. EC runs on two services at once,
side by side on their own ports: tracing off, and tracing on with every request sampled and the
spans exported over OTLP/HTTP to a dummy collector in a process of its own. Each client count is
run on one and then the other (which goes first alternates), so that the machine's load, which
moves, falls on both alike.
``--rounds N`` does that N times; the last lines give the median rates and CPU, and what tracing
cost.
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
from dataclasses import dataclass, field
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
from hsm.client_keys import generate_client_key  # noqa: E402

PORT = 18204
THINGS_PORT, AUTH_PORT = 18183, 18181
SINK_PORT = 18318
TRACED_PORT = 18205


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
    authority = stack.authority()
    ttl = timedelta(hours=100)
    return rate(lambda: authority.issue("thing", generate_client_key(key_type, bits), ttl),
                seconds, CORES)


def _line(count: int, result: dict[str, float], ceiling: float) -> str:
    return (f"  HTTP, {count:2d} clients: {result['rate']:,.1f} certs/s "
            f"= {result['rate'] / ceiling:.0%} of the ceiling; "
            f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
            f"(p99/p50 {result['p99'] / max(result['p50'], 1e-9):.1f}); "
            f"failures {result['failures']:.0f}")


@dataclass
class _Phase:
    """One of the two services the EC runs alternate between: tracing off, or on."""
    label: str
    port: int
    service: Any
    meter: CpuMeter
    rates: dict[int, list[float]] = field(default_factory=dict)
    cpu: dict[int, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The label without its explanation: "tracing off" or "tracing on"."""
        return self.label.split(" (")[0]


def _slice(phase: _Phase, count: int, seconds: float, request: bytes, ceiling: float,
           profile: Path | None) -> None:
    """One EC load run on ``phase``'s service: its line, and its rate and service CPU kept."""
    spy = out = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        out = profile / f"ec-{phase.name.replace(' ', '-')}.txt"
        spy = record_profile(worker_pids(phase.service.pid)[0], seconds, out)
    before = phase.meter.snapshot()
    result = asyncio.run(load(phase.port, [request], count, seconds, status_is(201)))
    spent = CpuMeter.per_request(before, phase.meter.snapshot(), result["count"])
    phase.rates.setdefault(count, []).append(result["rate"])
    phase.cpu.setdefault(count, []).append(spent["service"])
    print(f"  {phase.label}")
    print(_line(count, result, ceiling))
    print(f"    {CpuMeter.describe(spent)}", flush=True)
    if spy is not None and out is not None:
        spy.wait(timeout=60)
        if out.exists():
            print(f"  profile of one worker ({out}):\n{summarize(out)}", flush=True)


def _phases(stack: BenchStack) -> list[_Phase]:
    """Both services, side by side on their own ports: tracing off, and tracing on."""
    traced = {"MF_JAEGER_URL": f"http://127.0.0.1:{SINK_PORT}",
              "OTEL_TRACES_SAMPLER": "always_on", "MF_CERTS_HTTP_PORT": str(TRACED_PORT)}
    phases = []
    for label, port, extra in (("tracing off", PORT, {}),
                               ("tracing on (every request sampled, OTLP/HTTP to a local sink)",
                                TRACED_PORT, traced)):
        service = stack.serve(extra)
        components = stack.components(service)
        phases.append(_Phase(label, port, service, CpuMeter({
            "service": components["service"], "identity provider": components["identity"],
            "PostgreSQL": components["PostgreSQL"]})))
    return phases


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

            phases = _phases(stack)
            for round_number in range(args.rounds):
                print(f"EC-256, round {round_number + 1} of {args.rounds}:")
                for count in clients:
                    # Which goes first alternates too: a run warms the database for the next.
                    for phase in phases[::1 if round_number % 2 == 0 else -1]:
                        profile = (args.profile if round_number == 0 and count == max(clients)
                                   else None)
                        _slice(phase, count, args.seconds, issue("ec", 256), ceilings["ec"],
                               profile)
            if "rsa" in ceilings:
                print("RSA-2048, tracing off:")
                for count in clients:
                    result = asyncio.run(load(PORT, [issue("rsa", 2048)], count, args.seconds,
                                              status_is(201)))
                    print(_line(count, result, ceilings["rsa"]), flush=True)
            _summary(phases, clients, args.rounds)
            print(f"OTLP bytes received by the sink: {exported.value:,}")
    finally:
        sink.terminate()


def _summary(phases: list[_Phase], clients: list[int], rounds: int) -> None:
    """Median rate and service CPU per issuance of each phase, and what tracing cost."""
    off, on = phases
    median = " (medians over the rounds)" if rounds > 1 else ""
    print(f"\nEC-256 issuance{median}:")
    for count in clients:
        print(f"  {count:2d} clients: " + "; ".join(
            f"{phase.name} {statistics.median(phase.rates[count]):,.1f}/s, "
            f"service CPU {statistics.median(phase.cpu[count]):.2f} ms" for phase in phases))
    cost = {count: 1 - statistics.median(on.rates[count]) / statistics.median(off.rates[count])
            for count in clients}
    print("tracing on costs: "
          + ", ".join(f"{count} clients {cost[count]:.0%}" for count in clients) + " of the rate")


if __name__ == "__main__":
    main()
