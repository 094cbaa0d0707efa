"""HTTP issuance benchmark: certificates per second over HTTP against the in-process ceiling.

Run: .venv/bin/python bench/http_bench.py [--seconds 10] [--clients 1,4,16]

It starts everything itself on this machine: a SoftHSM2 token with an EC P-256 CA, a throwaway
PostgreSQL cluster, the static identity provider (gRPC) and `certs serve` with one worker per
core; then drives POST /certs from a small asyncio HTTP/1.1 client with keep-alive connections.
In the same run it measures the signing core in-process on all cores (the ceiling) and reports
the HTTP rate as a ratio to it. For EC it also prints the CPU time each component (service,
identity provider, PostgreSQL, load client) spent per certificate, read from /proc.
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
from datetime import timedelta
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    state = Path(tempfile.mkdtemp(prefix="certs-http-bench-"))
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

        authority = CertificateAuthority(AuthorityConfig(
            hsm=HsmConfig(module_path=env["MF_CERTS_HSM_MODULE"],
                          pin=Path(env["MF_CERTS_HSM_PIN_FILE"]).read_text(),
                          token_label="certs", pool_size=CORES * 2),
            ca_certificate_path=env["MF_CERTS_SIGN_CA_PATH"]))
        ttl = timedelta(hours=100)
        print(f"cores: {CORES}; server: {CORES} worker processes, PostgreSQL, identity "
              f"provider, all on this machine\n")
        assert cluster.pid is not None
        meter = CpuMeter({"service": processes[1].pid, "identity provider": processes[0].pid,
                          "PostgreSQL": cluster.pid})
        for key_type, bits, seconds in (("ec", 256, args.seconds), ("rsa", 2048, args.seconds)):
            ceiling = rate(lambda kt=key_type, b=bits: authority.issue(
                "thing", generate_client_key(kt, b), ttl), seconds / 2, CORES)
            print(f"{key_type.upper()}-{bits} client certs in-process on {CORES} threads "
                  f"(ceiling): {ceiling:,.1f}/s")
            body = json.dumps({"thing_id": thing, "key_type": key_type, "key_bits": bits,
                               "ttl": "100h"}).encode()
            for count in clients:
                before = meter.snapshot()
                result = asyncio.run(load(count, seconds, body, token))
                used = meter.per_certificate(before, meter.snapshot(), result["count"])
                print(f"  HTTP, {count:2d} clients: {result['rate']:,.1f} certs/s "
                      f"= {result['rate'] / ceiling:.0%} of the ceiling; "
                      f"p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms "
                      f"(p99/p50 {result['p99'] / result['p50']:.1f}); "
                      f"failures {result['failures']:.0f}")
                if key_type == "ec":
                    print(f"    {used}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)
        cluster.cleanup()


if __name__ == "__main__":
    main()
