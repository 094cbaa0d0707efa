"""Per-route HTTP benchmark: issue (EC P-256 and RSA-2048), view and list at 1, 4 and 16 clients.

Run: .venv/bin/python bench/routes_bench.py [--seconds 10] [--clients 1,4,16]
     [--routes ec,rsa,view,list] [--workers N] [--code DIR] [--before DIR --rounds N]
     [--profile DIR]

It starts everything on this machine as bench/http_bench.py does (SoftHSM2 token with an EC P-256
CA, a throwaway PostgreSQL cluster, the static identity provider over gRPC, `certs serve` with one
worker per core) and drives each route from keep-alive asyncio HTTP/1.1 clients. Each line gives
req/s, p50, p99 and the CPU time the service's own processes (workers and scheduler, read from
/proc) spent per successful request, next to the identity provider's and PostgreSQL's.

- view: GET /certs/{serial} of one of 20 certificates of the second demo thing (each client its
  own serial);
- list: GET /things/{thing}/serials?limit=10 of that thing (20 active certificates);
- issue: POST /certs for the first demo thing.

``--code DIR`` runs the service from another checkout, everything else from this one.
``--before DIR`` also measures another checkout (e.g. a `git worktree` of the code before a
change) in the same run, each on a database of its own: ``--rounds N`` alternates the two N
times, in the opposite order each round, so that the machine's noise falls on both;
it prints the medians and the rate ratio.
``--profile DIR`` also samples one worker with py-spy (native frames) during each run of the
last round, writes DIR/<code>/<route>-<clients>.txt (collapsed stacks) and prints the top
entries (waiting threads left out); the figures of a profiled run are slowed by the sampling.
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hsm_bench import CORES  # noqa: E402
from bench.sampling import record_profile, summarize  # noqa: E402
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


Result = dict[str, float]


def _plans(stack: BenchStack, serials: list[str]
           ) -> dict[str, tuple[str, int, list[bytes]]]:
    issued_thing, listed_thing = stack.things[0], stack.things[1]

    def issue(key_type: str, bits: int) -> bytes:
        body = (f'{{"thing_id": "{issued_thing}", "key_type": "{key_type}", '
                f'"key_bits": {bits}, "ttl": "100h"}}').encode()
        return http_request("POST", "/certs", token=stack.token, body=body)

    return {
        "ec": ("EC P-256 issue", 201, [issue("ec", 256)]),
        "rsa": ("RSA-2048 issue", 201, [issue("rsa", 2048)]),
        "view": ("view a certificate", 200, [
            http_request("GET", f"/certs/{serial}", token=stack.token) for serial in serials]),
        "list": ("list a thing's serials", 200, [
            http_request("GET", f"/things/{listed_thing}/serials?limit=10", token=stack.token)]),
    }


def _measure(stack: BenchStack, code: Path, database: str, args: argparse.Namespace,
             profile: Path | None) -> dict[tuple[str, int], Result]:
    """One service from ``code`` on ``database``: every route at every client count."""
    service = stack.serve({"MF_CERTS_DB_URL": database,
                           "MF_CERTS_WORKERS": str(args.workers)}, code=code)
    try:
        serials = [stack.issue(stack.things[1])["serial"] for _ in range(20)]
        meter = CpuMeter(stack.components(service))
        idle_before = meter.snapshot()
        time.sleep(IDLE_SECONDS)
        idle = CpuMeter.per_request(idle_before, meter.snapshot(), IDLE_SECONDS)
        print(f"{code}: service CPU while idle {idle['service']:.2f} ms per second", flush=True)
        plans = _plans(stack, serials)
        found: dict[tuple[str, int], Result] = {}
        for route in args.routes.split(","):
            _label, expect, requests = plans[route]
            for count in (int(c) for c in args.clients.split(",")):
                spy = None
                if profile is not None:
                    profile.mkdir(parents=True, exist_ok=True)
                    spy = record_profile(worker_pids(service.pid)[0], args.seconds,
                                   profile / f"{route}-{count}.txt")
                before = meter.snapshot()
                result = asyncio.run(load(PORT, requests, count, args.seconds,
                                          status_is(expect)))
                cpu = CpuMeter.per_request(before, meter.snapshot(), result["count"])
                found[(route, count)] = {**result, **{f"cpu {k}": v for k, v in cpu.items()}}
                if spy is not None:
                    spy.wait(timeout=60)
                    raw = profile / f"{route}-{count}.txt" if profile else None
                    if raw is not None and raw.exists():
                        print(f"profile of one worker, {route}, {count} clients ({raw}):\n"
                              f"{summarize(raw)}", flush=True)
        return found
    finally:
        stack.stop(service)


def openssl_p256_signs_per_second() -> float:
    """OpenSSL's P-256 signing rate on one core: the machine's speed, so that CPU times
    measured on machines of different speeds can be compared."""
    out = subprocess.run(["openssl", "speed", "-seconds", "2", "ecdsap256"],
                         capture_output=True, text=True, check=True).stdout
    line = next(row for row in out.splitlines() if "ecdsa (nistp256)" in row)
    return float(line.split()[-2])


def _median(results: list[Result], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--workers", type=int, default=CORES,
                        help="MF_CERTS_WORKERS of the service (default: one per core)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="checkout the service runs from (default: this one)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout measured in the same run, alternately")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds (each measures every checkout once); medians are shown")
    parser.add_argument("--profile", type=Path, default=None,
                        help="folder for py-spy profiles of one worker")
    args = parser.parse_args()
    versions = {"this": args.code.resolve()}
    if args.before is not None:
        versions = {"before": args.before.resolve(), **versions}
    with BenchStack(PORT, THINGS_PORT, AUTH_PORT, prefix="certs-routes-bench-") as stack:
        assert stack.cluster is not None
        databases = {name: stack.cluster.url(stack.cluster.create_database(f"bench_{name}"))
                     for name in versions}
        print(f"{args.workers} worker processes, PostgreSQL, identity provider and load "
              f"client on this machine ({CORES} cores); " +
              ", ".join(f"{name}: {code}" for name, code in versions.items()))
        rounds: dict[str, list[dict[tuple[str, int], Result]]] = {n: [] for n in versions}
        for number in range(args.rounds):
            # The checkout measured second in a round runs measurably slower (the machine
            # still busy with the first one's database): the order flips every round.
            order = list(versions.items())
            for name, code in order[::-1] if number % 2 else order:
                profile = None
                if args.profile is not None and number == args.rounds - 1:
                    profile = args.profile / name
                rounds[name].append(_measure(stack, code, databases[name], args, profile))
        labels = {route: label for route, (label, _, _) in _plans(stack, []).items()}
        print(f"\nmachine speed: OpenSSL P-256 signatures on one core "
              f"{openssl_p256_signs_per_second():,.0f}/s")
        print(f"\nmedians of {args.rounds} round(s) of {args.seconds:g} s; CPU ms per request "
              f"of the service (workers + scheduler), the identity provider and PostgreSQL")
        print(f"\n| request | clients | code | req/s | p50 ms | p99 ms | service CPU ms/req | "
              f"identity | PostgreSQL | failures |\n|{'---|' * 10}")
        for key in rounds["this"][0]:
            for name in versions:
                results = [found[key] for found in rounds[name]]
                print(f"| {labels[key[0]]} | {key[1]} | {name} | "
                      f"{_median(results, 'rate'):,.0f} | {_median(results, 'p50'):.1f} | "
                      f"{_median(results, 'p99'):.1f} | "
                      f"{_median(results, 'cpu service'):.2f} | "
                      f"{_median(results, 'cpu identity'):.2f} | "
                      f"{_median(results, 'cpu PostgreSQL'):.2f} | "
                      f"{sum(r['failures'] for r in results):.0f} |")
            if "before" in versions:
                ratio = (_median([f[key] for f in rounds["this"]], "rate")
                         / max(_median([f[key] for f in rounds["before"]], "rate"), 1e-9))
                print(f"| {labels[key[0]]} | {key[1]} | this / before | {ratio:.2f} times | | | | "
                      f"| | |")


if __name__ == "__main__":
    main()
