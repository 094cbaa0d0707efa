"""Prometheus metrics of the HTTP requests.

``certs_api_request_count{method}`` and ``certs_api_request_latency_microseconds{method}`` keep
the Go service's names and labels (``method`` is the Go endpoint name, e.g. ``issue_cert``), so
existing dashboards keep working; ``certs_api_responses_total{method,status}`` adds the status
code and ``certs_api_request_seconds{method,status}`` a latency histogram per status.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from authority import context
from authority.prometheus import Counter, Gauge, Histogram, Summary

# A Counter would be exposed as ..._total; the Go service's name has no suffix.
REQUEST_COUNT = Gauge("certs_api_request_count", "Number of requests received.", ["method"],
                      multiprocess_mode="sum")
REQUEST_LATENCY = Summary("certs_api_request_latency_microseconds",
                          "Total duration of requests in microseconds.", ["method"])
RESPONSES = Counter("certs_api_responses", "Responses sent, by method and status code.",
                    ["method", "status"])
RESPONSE_SECONDS = Histogram(
    "certs_api_request_seconds", "Duration of requests, by method and status code.",
    ["method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


# The labelled children per (method, status), looked up once: ``labels()`` takes a lock and
# builds a key on every call.
_Children = tuple[Any, Any, Any, Any]
_children: dict[tuple[str, int | str], _Children] = {}


def _children_of(method: str, status: int | str) -> _Children:
    found = _children.get((method, status))
    if found is None:
        code = str(status)
        found = (REQUEST_COUNT.labels(method=method), REQUEST_LATENCY.labels(method=method),
                 RESPONSES.labels(method=method, status=code),
                 RESPONSE_SECONDS.labels(method=method, status=code))
        _children[(method, status)] = found
    return found


def record(method: str, status: int | str, seconds: float) -> None:
    """Count one request of ``method`` answered with ``status`` after ``seconds``."""
    count, latency, responses, durations = _children_of(method, status)
    count.inc()
    latency.observe(seconds * 1e6)
    responses.inc()
    durations.observe(seconds)


@contextmanager
def observe(method: str) -> Iterator[None]:
    """Name the request ``method`` for the metrics. Inside a request the middleware records
    it once the status is known; outside one it is recorded here (status 500 on an error)."""
    current = context.current()
    if current is not None:
        current.operation = method
        yield
        return
    started = time.perf_counter()
    status = 500
    try:
        yield
        status = 200
    finally:
        record(method, status, time.perf_counter() - started)
