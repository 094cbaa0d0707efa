"""Prometheus metrics of the background work (rotation, outbox relay, platform events).

The scheduler runs in its own process: serve them with ``python -m scheduler --metrics-port``,
or aggregate them with prometheus_client's multiprocess mode (the gauges declare a mode).
"""

from authority.prometheus import Counter, Gauge

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
PLATFORM_EVENTS_HANDLED = Counter(
    "certs_platform_events_handled_total",
    "Platform events (thing.remove, group.remove) applied and acknowledged.",
)
PLATFORM_EVENTS_IGNORED = Counter(
    "certs_platform_events_ignored_total",
    "Platform events acknowledged without effect (other operations, or naming no thing).",
)
PLATFORM_EVENTS_FAILED = Counter(
    "certs_platform_events_failed_total",
    "Attempts to apply a platform event that failed (database down); the event is retried.",
)
PLATFORM_EVENT_REVOCATIONS = Counter(
    "certs_platform_event_revocations_total",
    "Certificates revoked because their thing was removed.",
)
PLATFORM_EVENTS_CONNECTED = Gauge(
    "certs_platform_events_connected",
    "1 while the platform-event consumer reaches Redis, 0 while it does not.",
    multiprocess_mode="mostrecent",
)
