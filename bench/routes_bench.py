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
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack import (  # noqa: E402
    BenchStack,
    CpuMeter,
    http_request,
    load,
    status_is,
    worker_pids,
)

PORT = 18206
THINGS_PORT, AUTH_PORT = 18185, 18187
ROUTES = ("ec", "rsa", "view", "list")
IDLE_SECONDS = 3.0


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
    with BenchStack(PORT, THINGS_PORT, AUTH_PORT, prefix="certs-routes-bench-") as stack:
        issued_thing, listed_thing = stack.things[0], stack.things[1]
        service = stack.serve(code=code)
        serials = [stack.issue(listed_thing)["serial"] for _ in range(20)]
        meter = CpuMeter(stack.components(service))
        workers = stack.env["MF_CERTS_WORKERS"]
        print(f"{workers} worker processes, PostgreSQL, identity provider and load client on "
              f"this machine; service code: {code}")
        idle_before = meter.snapshot()
        time.sleep(IDLE_SECONDS)
        idle = CpuMeter.per_request(idle_before, meter.snapshot(), IDLE_SECONDS)
        print(f"service CPU while idle: {idle['service']:.2f} ms per second")
        print("CPU ms per request: service (workers + scheduler) / identity / PostgreSQL")

        def issue(key_type: str, bits: int) -> bytes:
            body = (f'{{"thing_id": "{issued_thing}", "key_type": "{key_type}", '
                    f'"key_bits": {bits}, "ttl": "100h"}}').encode()
            return http_request("POST", "/certs", token=stack.token, body=body)

        plans: dict[str, tuple[str, int, Callable[[], list[bytes]]]] = {
            "ec": ("EC P-256 issue", 201, lambda: [issue("ec", 256)]),
            "rsa": ("RSA-2048 issue", 201, lambda: [issue("rsa", 2048)]),
            "view": ("view a certificate", 200, lambda: [
                http_request("GET", f"/certs/{serial}", token=stack.token)
                for serial in serials]),
            "list": ("list a thing's serials", 200, lambda: [
                http_request("GET", f"/things/{listed_thing}/serials?limit=10",
                             token=stack.token)]),
        }
        print(f"\n| request | clients | req/s | p50 ms | p99 ms | service CPU ms/req | "
              f"identity | PostgreSQL | failures |\n|{'---|' * 9}")
        for route in routes:
            label, expect, make = plans[route]
            for count in clients:
                spy = None
                if args.profile is not None and count == max(clients):
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = _profile(worker_pids(service.pid)[0], args.seconds,
                                   args.profile / f"{route}.txt")
                before = meter.snapshot()
                result = asyncio.run(load(PORT, make(), count, args.seconds,
                                          status_is(expect)))
                cpu = CpuMeter.per_request(before, meter.snapshot(), result["count"])
                print(f"| {label} | {count} | {result['rate']:,.0f} | {result['p50']:.1f} | "
                      f"{result['p99']:.1f} | {cpu['service']:.2f} | {cpu['identity']:.2f} | "
                      f"{cpu['PostgreSQL']:.2f} | {result['failures']:.0f} |", flush=True)
                if spy is not None:
                    spy.wait(timeout=60)
                    profile = args.profile / f"{route}.txt"
                    if profile.exists():
                        print(f"profile of one worker, {label}, {count} clients "
                              f"({profile}):\n{summarize(profile)}", flush=True)


if __name__ == "__main__":
    main()
