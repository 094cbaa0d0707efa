"""Prometheus metrics of the background work (rotation, outbox relay).

The scheduler runs in its own process: serve them with ``python -m scheduler --metrics-port``,
or aggregate them with prometheus_client's multiprocess mode (the gauges declare a mode).
"""

from prometheus_client import Counter, Gauge

ROTATIONS = Counter("certs_rotations_total", "Certificates renewed by the rotation loop.")
ROTATION_FAILURES = Counter(
    "certs_rotation_failures_total",
    "Certificates the rotation loop failed to renew (retried at the next run).",
)
ROTATIONS_SKIPPED = Counter(
    "certs_rotations_skipped_total",
    "Claimed certificates not renewed: revoked or renewed elsewhere meanwhile, or the CA "
    "expires before a renewal could outlive them.",
)
ROTATION_RUNS = Counter("certs_rotation_runs_total", "Rotation runs started.")
ROTATION_LAST_RUN = Gauge(
    "certs_rotation_last_run_seconds", "Unix time the last rotation run ended.",
    multiprocess_mode="max",
)
OUTBOX_BACKLOG = Gauge(
    "certs_outbox_backlog", "Events waiting in the outbox to be published to NATS.",
    multiprocess_mode="mostrecent",
)
EVENTS_PUBLISHED = Counter("certs_events_published_total", "Outbox events published to NATS.")
RELAY_FAILURES = Counter(
    "certs_relay_failures_total", "Outbox drain attempts that failed (NATS or database down)."
)
