"""HTTP issuance benchmark: certificates per second over HTTP against the in-process ceiling.

Run: .venv/bin/python bench/http_bench.py [--seconds 10] [--clients 1,4,16]

It starts everything itself on this machine: a SoftHSM2 token with an EC P-256 CA, a throwaway
PostgreSQL cluster, the static identity provider (gRPC) and `certs serve` with one worker per
core; then drives POST /certs from a small asyncio HTTP/1.1 client with keep-alive connections.
In the same run it measures the signing core in-process on all cores (the ceiling) and reports
the HTTP rate as a ratio to it. For EC it also prints the CPU time each component (service,
identity provider, PostgreSQL, load client) spent per certificate, read from /proc. EC runs
twice in the same run: tracing off, then tracing on with every request sampled and the spans
exported over OTLP/HTTP to a dummy collector in a process of its own.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hsm_bench import CORES, rate  # noqa: E402
from hsm.authority import AuthorityConfig, CertificateAuthority  # noqa: E402
from hsm.client_keys import generate_client_key  # noqa: E402
from hsm.connection import HsmConfig  # noqa: E402
from tests.fixtures.ports import wait_for_port  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

PORT = 18204
THINGS_PORT, AUTH_PORT = 18183, 18181
SINK_PORT = 18318


async def _client(host: str, port: int, body: bytes, token: str, stop: float,
                  latencies: list[float], failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (f"POST /certs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
               ).encode() + body
    while time.monotonic() < stop:
        started = time.perf_counter()
        writer.write(request)
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
        if b" 201 " not in status_line:
            failures.append(1)
    writer.close()


async def load(clients: int, seconds: float, body: bytes, token: str) -> dict[str, float]:
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client("127.0.0.1", PORT, body, token, stop, latencies, failures)
                           for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "count": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failures": len(failures),
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its living descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue  # it exited meanwhile
        total += (int(stat[11]) + int(stat[12])) / ticks
        for task in tasks:
            try:
                stack.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return total


class CpuMeter:
    """CPU time per component over a load phase, to show where the cores go."""

    def __init__(self, components: dict[str, int]) -> None:
        self.components = components

    def snapshot(self) -> dict[str, float]:
        taken = {name: tree_cpu_seconds(pid) for name, pid in self.components.items()}
        taken["load client"] = time.process_time()
        return taken

    @staticmethod
    def per_certificate(before: dict[str, float], after: dict[str, float],
                        certificates: float) -> str:
        spent = {name: (after[name] - before[name]) * 1000 / max(certificates, 1)
                 for name in before}
        parts = ", ".join(f"{name} {ms:.2f}" for name, ms in spent.items())
        total = sum(spent.values())
        return (f"CPU ms per certificate: {parts}; total {total:.2f} "
                f"(at most {CORES * 1000 / total:,.0f}/s on {CORES} cores)")


def _sink(port: int, spans_bytes: Any) -> None:
    """A dummy OTLP/HTTP collector: takes every export and answers 200 (its own process)."""

    class Handler(BaseHTTPRequestHandler):
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


def _serve(env: dict[str, str]) -> "subprocess.Popen[bytes]":
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env)
    try:
        wait_for_port(PORT, 60, process=process)
    except BaseException:
        _stop(process)
        raise
    time.sleep(2)
    return process


def _stop(process: "subprocess.Popen[bytes]") -> None:
    process.terminate()
    process.wait(timeout=30)


def _run_ec(label: str, clients: list[int], seconds: float, body: bytes, token: str,
            ceiling: float, meter: CpuMeter) -> None:
    print(f"EC-256, {label}:")
    for count in clients:
        before = meter.snapshot()
        result = asyncio.run(load(count, seconds, body, token))
        used = meter.per_certificate(before, meter.snapshot(), result["count"])
        print(f"  HTTP, {count:2d} clients: {result['rate']:,.1f} certs/s "
              f"= {result['rate'] / ceiling:.0%} of the ceiling; "
              f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
              f"(p99/p50 {result['p99'] / result['p50']:.1f}); "
              f"failures {result['failures']:.0f}")
        print(f"    {used}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--no-rsa", action="store_true", help="EC only")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    state = Path(tempfile.mkdtemp(prefix="certs-http-bench-"))
    from devtools.quickstart import prepare

    env = {**os.environ, **prepare(state)}
    env.update({"MF_THINGS_GRPC_URL": f"127.0.0.1:{THINGS_PORT}",
                "MF_AUTH_GRPC_URL": f"127.0.0.1:{AUTH_PORT}", "MF_CERTS_HTTP_PORT": str(PORT),
                "MF_CERTS_LOG_LEVEL": "error", "MF_CERTS_WORKERS": str(CORES)})
    env.pop("MF_JAEGER_URL", None)
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    cluster = PostgresCluster().start()
    processes: list[subprocess.Popen[bytes]] = []
    exported = multiprocessing.Value("q", 0)
    sink = multiprocessing.Process(target=_sink, args=(SINK_PORT, exported), daemon=True)
    sink.start()
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

        authority = CertificateAuthority(AuthorityConfig(
            hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                          pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                          token_label="certs", pool_size=CORES * 2),
            ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))
        ttl = timedelta(hours=100)
        print(f"cores: {CORES}; server: {CORES} worker processes, PostgreSQL, identity "
              f"provider, all on this machine\n")
        assert cluster.pid is not None
        ceilings = {}
        for key_type, bits in (("ec", 256), ("rsa", 2048)):
            if key_type == "rsa" and args.no_rsa:
                continue
            ceilings[key_type] = rate(lambda kt=key_type, b=bits: authority.issue(
                "thing", generate_client_key(kt, b), ttl), args.seconds / 2, CORES)
            print(f"{key_type.upper()}-{bits} client certs in-process on {CORES} threads "
                  f"(ceiling): {ceilings[key_type]:,.1f}/s")
        ec_body = json.dumps({"thing_id": thing, "key_type": "ec", "key_bits": 256,
                              "ttl": "100h"}).encode()
        traced = {**env, "MF_JAEGER_URL": f"http://127.0.0.1:{SINK_PORT}",
                  "OTEL_TRACES_SAMPLER": "always_on"}
        for label, service_env in (("tracing off", env),
                                   ("tracing on (every request sampled, OTLP/HTTP to a local "
                                    "sink)", traced)):
            service = _serve(service_env)
            try:
                meter = CpuMeter({"service": service.pid,
                                  "identity provider": processes[0].pid,
                                  "PostgreSQL": cluster.pid})
                _run_ec(label, clients, args.seconds, ec_body, token, ceilings["ec"], meter)
                if label == "tracing off" and "rsa" in ceilings:
                    body = json.dumps({"thing_id": thing, "key_type": "rsa", "key_bits": 2048,
                                       "ttl": "100h"}).encode()
                    print("RSA-2048, tracing off:")
                    for count in clients:
                        result = asyncio.run(load(count, args.seconds, body, token))
                        print(f"  HTTP, {count:2d} clients: {result['rate']:,.1f} certs/s "
                              f"= {result['rate'] / ceilings['rsa']:.0%} of the ceiling; "
                              f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms; "
                              f"failures {result['failures']:.0f}")
            finally:
                _stop(service)
        print(f"\nOTLP bytes received by the sink: {exported.value:,}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        sink.terminate()
        cluster.cleanup()


if __name__ == "__main__":
    main()
