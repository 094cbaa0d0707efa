"""Tracing in one process: the CPU the spans of an EC issuance cost, export included.

Run: .venv/bin/python bench/tracing_bench.py [--requests 20000]

It sets tracing up as a service process does (``authority.tracing.setup``: the SDK's batch span
processor and OTLP/HTTP exporter, every span sampled) towards the dummy collector of
bench/http_bench.py in a process of its own, then makes the spans of one EC issuance again and
again, as the service makes them: the server span, the identity call (with its outgoing
``traceparent``), the HSM signature and the database transaction. It prints the CPU time of this
process per request (the exporting thread's included; a flush every 256 requests keeps the
queue from dropping spans), next to the CPU time of
one issuance by the signing core in-process on one thread, measured in the same run (a client
key made, the certificate built and signed in the HSM).
"""

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authority import tracing  # noqa: E402
from bench.http_bench import _sink  # noqa: E402
from bench.stack import open_authority  # noqa: E402

SINK_PORT = 18319
FLUSH_EVERY = 256  # requests: 1,024 spans, half the batch processor's queue
HEADERS = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer token"),
           (b"content-type", b"application/json")]


def issuance_spans() -> None:
    """The spans the service makes for one EC issuance (the user already identified)."""
    with tracing.server_span("POST /certs", HEADERS, {"http.request.method": "POST",
                                                      "http.route": "/certs"}) as server:
        with tracing.leaf_span("things/CanAccessByID", {"rpc.system": "grpc",
                                                        "rpc.method": "CanAccessByID"},
                               kind=tracing.SpanKind.CLIENT) as call:
            tracing.outgoing_headers(call)
        with tracing.leaf_span("hsm.sign"):
            pass
        with tracing.leaf_span("db.transaction", {"db.system": "postgresql"},
                               kind=tracing.SpanKind.CLIENT):
            pass
        server.set_attribute("http.response.status_code", 201)


def _traced_requests(count: int) -> None:
    for done in range(1, count + 1):
        issuance_spans()
        if done % FLUSH_EVERY == 0:
            tracing.flush()  # the queue stays below its bound: no span is dropped


def cpu_per_call(work: Callable[[], object], count: int) -> float:
    """Microseconds of this process's CPU per call of ``work``."""
    started = time.process_time()
    for _ in range(count):
        work()
    return (time.process_time() - started) / count * 1e6


def _issuance_cpu(count: int) -> float:
    """CPU per in-process EC issuance by the signing core, on a SoftHSM2 token of its own."""
    import tempfile
    from datetime import timedelta

    from devtools.quickstart import prepare
    from hsm.client_keys import generate_client_key

    env = prepare(Path(tempfile.mkdtemp(prefix="certs-tracing-bench-")))
    os.environ["SOFTHSM2_CONF"] = env["SOFTHSM2_CONF"]
    authority = open_authority(env)
    ttl = timedelta(hours=100)
    return cpu_per_call(lambda: authority.issue("thing", generate_client_key("ec", 256), ttl),
                        count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    issuance = _issuance_cpu(max(args.requests // 4, 500))
    received = multiprocessing.Value("q", 0)
    sink = multiprocessing.Process(target=_sink, args=(SINK_PORT, received), daemon=True)
    sink.start()
    try:
        os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
        tracing.setup(f"http://127.0.0.1:{SINK_PORT}", service_name="certs-bench")
        _traced_requests(1000)  # warm up, and the first batches exported
        started = time.process_time()
        _traced_requests(args.requests)
        tracing.shutdown()  # what is left is exported, on this process's CPU
        spans = (time.process_time() - started) / args.requests * 1e6
    finally:
        sink.terminate()
    print(f"one EC issuance by the signing core in-process: {issuance:.0f} µs of CPU")
    print(f"the spans of one issuance (4, exported over OTLP/HTTP): {spans:.0f} µs of CPU "
          f"= {spans / issuance:.0%} of the in-process issuance")
    print(f"OTLP bytes received by the sink: {received.value:,}")


if __name__ == "__main__":
    main()
