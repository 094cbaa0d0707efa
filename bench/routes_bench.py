"""Per-route HTTP benchmark: issue (EC P-256 and RSA-2048), view and list at 1, 4 and 16 clients.

Run: .venv/bin/python bench/routes_bench.py [--seconds 10] [--clients 1,4,16]
     [--routes ec,rsa,view,list] [--code DIR] [--profile DIR]

It starts everything on this machine as bench/http_bench.py does (SoftHSM2 token with an EC P-256
CA, a throwaway PostgreSQL cluster, the static identity provider over gRPC, `certs serve` with one
worker per core) and drives each route from keep-alive asyncio HTTP/1.1 clients. Each line gives
req/s, p50, p99 and the CPU time the service's own processes (workers and scheduler, read from
/proc) spent per successful request, next to the identity provider's and PostgreSQL's.

- view: GET /certs/{serial} of one of 20 certificates of the second demo thing (each client its
  own serial);
- list: GET /things/{thing}/serials?limit=10 of that thing (20 active certificates);
- issue: POST /certs for the first demo thing.

``--code DIR`` runs the service from another checkout (e.g. a `git worktree` of the code before a
change), everything else from this one, so two versions can be compared in one sitting.
``--profile DIR`` also samples one worker with py-spy (native frames) during the run with the
most clients of each route, writes DIR/<route>.txt (collapsed stacks) and prints the top entries
(waiting threads left out); the figures of a profiled run are slowed by the sampling.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hsm_bench import CORES  # noqa: E402
from bench.http_bench import tree_cpu_seconds  # noqa: E402
from tests.fixtures.ports import wait_for_port  # noqa: E402
from tests.fixtures.postgres import PostgresCluster  # noqa: E402

PORT = 18206
THINGS_PORT, AUTH_PORT = 18185, 18187
ROUTES = ("ec", "rsa", "view", "list")


def _request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _client(request: bytes, expect: bytes, stop: float, latencies: list[float],
                  failures: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    while time.monotonic() < stop:
        started = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        if status_line.split(b" ", 2)[1:2] == [expect]:
            latencies.append(time.perf_counter() - started)
        else:
            failures.append(1)
    writer.close()


async def load(requests: list[bytes], expect: bytes, seconds: float) -> dict[str, float]:
    """Each client sends its request in a loop for ``seconds``; successful ones are timed."""
    latencies: list[float] = []
    failures: list[int] = []
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(request, expect, stop, latencies, failures)
                           for request in requests))
    elapsed = time.perf_counter() - started
    latencies.sort()
    count = len(latencies)
    return {
        "count": count,
        "rate": count / elapsed,
        "p50": statistics.median(latencies) * 1000 if count else 0.0,
        "p99": latencies[max(int(count * 0.99) - 1, 0)] * 1000 if count else 0.0,
        "failures": len(failures),
    }


def _children(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").iterdir():
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def worker_pids(service: int) -> list[int]:
    """The HTTP worker processes of a `certs serve`."""
    pids = []
    for pid in _children(service):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"server.workers" in command:
            pids.append(pid)
    return pids


_FRAME = re.compile(r"^(.*) \((?:.*/)?([^/:]*)(?::\d+)?\)$")


def _frame(text: str) -> str:
    """``function (file.py)``, the line number and folder dropped."""
    found = _FRAME.match(text)
    return f"{found.group(1)} ({found.group(2)})" if found else text


# Frames of a thread that waits (a lock, the GIL, the event loop's poll): not CPU.
_WAITING = ("PyThread_acquire_lock_timed", "take_gil", "epoll_wait", "epoll_pwait", "poll (",
            "select (", "sem_timedwait", "pthread_cond_wait", "pthread_cond_timedwait")


def summarize(raw: Path, top: int = 25) -> str:
    """Top functions of a py-spy raw (collapsed) profile, waiting samples left out: own
    samples (the leaf frame) and inclusive samples (anywhere on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        if any(marker in stack for marker in _WAITING):
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = max(total, 1)
    lines = [f"  {total} busy samples; own time:"]
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _serve(env: dict[str, str], code: Path) -> "subprocess.Popen[bytes]":
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env,
                               cwd=code)
    wait_for_port(PORT, 90, process=process)
    deadline = time.monotonic() + 60
    while len(worker_pids(process.pid)) < CORES and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    return process


def _issue(token: str, thing: str, key_type: str = "ec", bits: int = 256) -> str:
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    body = json.dumps({"thing_id": thing, "key_type": key_type, "key_bits": bits,
                       "ttl": "100h"})
    connection.request("POST", "/certs", body, {"Authorization": f"Bearer {token}",
                                                 "Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    assert response.status == 201, payload
    return str(payload["serial"])


def _profile(pid: int, seconds: float, out: Path) -> "subprocess.Popen[bytes]":
    spy = str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "--native", "--rate", "1000", "--duration",
                             str(max(int(seconds) - 1, 1)), "--format", "raw", "-o", str(out),
                             "-p", str(pid)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout the service runs from (default: this one)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles of one worker")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    routes = [r for r in args.routes.split(",") if r]
    code = args.code.resolve()
    state = Path(tempfile.mkdtemp(prefix="certs-routes-bench-"))
    from devtools.quickstart import prepare

    env = {**os.environ, **prepare(state)}
    env.update({"MF_THINGS_GRPC_URL": f"127.0.0.1:{THINGS_PORT}",
                "MF_AUTH_GRPC_URL": f"127.0.0.1:{AUTH_PORT}", "MF_CERTS_HTTP_PORT": str(PORT),
                "MF_CERTS_LOG_LEVEL": "error", "MF_CERTS_WORKERS": str(CORES),
                "PYTHONPATH": str(code)})
    env.pop("MF_JAEGER_URL", None)
    cluster = PostgresCluster().start()
    identity: subprocess.Popen[bytes] | None = None
    service: subprocess.Popen[bytes] | None = None
    try:
        env["MF_CERTS_DB_URL"] = cluster.url(cluster.create_database("bench"))
        identity_file = state / "identity.json"
        identity = subprocess.Popen(
            [sys.executable, "-m", "devtools.identity.provider", "--file", str(identity_file),
             "--demo", "--things-addr", env["MF_THINGS_GRPC_URL"],
             "--auth-addr", env["MF_AUTH_GRPC_URL"], "--log-level", "error"],
            env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.DEVNULL)
        wait_for_port(THINGS_PORT, 30, process=identity)
        demo = json.loads(identity_file.read_text())
        token = demo["users"][0]["token"]
        issued_thing, listed_thing = demo["things"][0]["id"], demo["things"][1]["id"]
        service = _serve(env, code)
        serials = [_issue(token, listed_thing) for _ in range(20)]
        assert cluster.pid is not None
        components = {"service": service.pid, "identity": identity.pid,
                      "PostgreSQL": cluster.pid}
        print(f"cores: {CORES}; {CORES} worker processes, PostgreSQL, identity provider and "
              f"load client on this machine; service code: {code}")
        print("CPU ms per request: service (workers + scheduler) / identity / PostgreSQL")

        def issue_body(key_type: str, bits: int) -> bytes:
            return json.dumps({"thing_id": issued_thing, "key_type": key_type,
                               "key_bits": bits, "ttl": "100h"}).encode()

        plans: dict[str, tuple[str, bytes, Callable[[int], bytes]]] = {
            "ec": ("EC P-256 issue", b"201",
                   lambda i: _request("POST", "/certs", token, issue_body("ec", 256))),
            "rsa": ("RSA-2048 issue", b"201",
                    lambda i: _request("POST", "/certs", token, issue_body("rsa", 2048))),
            "view": ("view a certificate", b"200",
                     lambda i: _request("GET", f"/certs/{serials[i % len(serials)]}", token)),
            "list": ("list a thing's serials", b"200",
                     lambda i: _request("GET", f"/things/{listed_thing}/serials?limit=10",
                                        token)),
        }
        print(f"\n| request | clients | req/s | p50 ms | p99 ms | service CPU ms/req | "
              f"identity | PostgreSQL | failures |\n|{'---|' * 9}")
        for route in routes:
            label, expect, make = plans[route]
            for count in clients:
                requests = [make(i) for i in range(count)]
                spy = None
                if args.profile is not None and count == max(clients):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = _profile(worker_pids(service.pid)[0], args.seconds,
                                   args.profile / f"{route}.txt")
                before = {name: tree_cpu_seconds(pid) for name, pid in components.items()}
                result = asyncio.run(load(requests, expect, args.seconds))
                after = {name: tree_cpu_seconds(pid) for name, pid in components.items()}
                done = max(result["count"], 1)
                cpu = {name: (after[name] - before[name]) * 1000 / done for name in before}
                print(f"| {label} | {count} | {result['rate']:,.0f} | {result['p50']:.1f} | "
                      f"{result['p99']:.1f} | {cpu['service']:.2f} | {cpu['identity']:.2f} | "
                      f"{cpu['PostgreSQL']:.2f} | {result['failures']:.0f} |", flush=True)
                if spy is not None:
                    spy.wait(timeout=60)
                    profile = args.profile / f"{route}.txt"
                    if profile.exists():
                        print(f"profile of one worker, {label}, {count} clients "
                              f"({profile}):\n{summarize(profile)}", flush=True)
    finally:
        for process in (service, identity):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        cluster.cleanup()


if __name__ == "__main__":
    main()
