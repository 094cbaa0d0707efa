"""Prometheus metrics; the request metrics keep the Go service's names."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Summary

# A Counter would be exposed as ..._total; the Go service's name has no suffix.
REQUEST_COUNT = Gauge("certs_api_request_count", "Number of requests received.", ["method"],
                      multiprocess_mode="sum")
REQUEST_LATENCY = Summary("certs_api_request_latency_microseconds",
                          "Total duration of requests in microseconds.", ["method"])
CERTS_ISSUED = Counter("certs_issued", "Certificates issued (issue, renew, rotate).")
CERTS_REVOKED = Counter("certs_revoked", "Certificates revoked.")
CRL_ENTRIES = Gauge("certs_crl_entries", "Entries in the current CRL.",
                    multiprocess_mode="max")
CRL_NUMBER = Gauge("certs_crl_number", "Number of the current CRL.", multiprocess_mode="max")
CRL_THIS_UPDATE = Gauge("certs_crl_this_update_seconds", "thisUpdate of the current CRL (Unix).",
                        multiprocess_mode="max")


@contextmanager
def observe(method: str) -> Iterator[None]:
    """Count a request of ``method`` and record its latency."""
    started = time.perf_counter()
    try:
        yield
    finally:
        REQUEST_COUNT.labels(method=method).inc()
        REQUEST_LATENCY.labels(method=method).observe((time.perf_counter() - started) * 1e6)
