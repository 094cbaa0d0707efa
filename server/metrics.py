"""Prometheus metrics of the HTTP requests; they keep the Go service's names."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Gauge, Summary

# A Counter would be exposed as ..._total; the Go service's name has no suffix.
REQUEST_COUNT = Gauge("certs_api_request_count", "Number of requests received.", ["method"],
                      multiprocess_mode="sum")
REQUEST_LATENCY = Summary("certs_api_request_latency_microseconds",
                          "Total duration of requests in microseconds.", ["method"])


@contextmanager
def observe(method: str) -> Iterator[None]:
    """Count a request of ``method`` and record its latency."""
    started = time.perf_counter()
    try:
        yield
    finally:
        REQUEST_COUNT.labels(method=method).inc()
        REQUEST_LATENCY.labels(method=method).observe((time.perf_counter() - started) * 1e6)
