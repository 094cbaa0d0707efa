"""Prometheus metrics of the domain (SPEC 11): certificates issued and revoked on every path,
the CRL, the HSM, the identity calls, the CA's expiry and the certificates about to expire.

Every process (HTTP workers, scheduler, CLI) writes its own figures; with
PROMETHEUS_MULTIPROC_DIR set, /metrics adds them up: counters and histograms are summed, the
HSM pool gauges are summed over living processes, and figures computed at scrape time (CA
expiry, CRL age, expiring certificates) take the value written last.

Issued and revoked certificates are counted from the audit records the store writes with each
change (``repository.audit.subscribe``), so whichever path makes a change counts it.
"""

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from authority import tracing
from authority.prometheus import Counter, Gauge, Histogram
from repository import audit

T = TypeVar("T")

CERTS_ISSUED = Counter("certs_issued", "Certificates issued, by path (the audit action).",
                       ["path"])
CERTS_REVOKED = Counter("certs_revoked", "Certificates revoked, by path and reason.",
                        ["path", "reason"])
CRL_ENTRIES = Gauge("certs_crl_entries", "Entries in the current CRL.",
                    multiprocess_mode="max")
CRL_NUMBER = Gauge("certs_crl_number", "Number of the current CRL.", multiprocess_mode="max")
CRL_THIS_UPDATE = Gauge("certs_crl_this_update_seconds", "thisUpdate of the current CRL (Unix).",
                        multiprocess_mode="max")
CRL_AGE = Gauge("certs_crl_age_seconds", "Seconds since the CRL file was last written.",
                multiprocess_mode="mostrecent")
CA_EXPIRY = Gauge("certs_ca_expiry_seconds", "Seconds until the CA certificate expires.",
                  multiprocess_mode="mostrecent")
EXPIRING = Gauge("certs_expiring_certificates",
                 "Active certificates that expire within the renew window or within a day.",
                 ["within"], multiprocess_mode="mostrecent")
HSM_SIGN_SECONDS = Histogram(
    "certs_hsm_sign_seconds", "Time of one signature in the HSM (certificate, CRL, OCSP).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
HSM_SESSIONS = Gauge("certs_hsm_sessions", "Size of the HSM session pools.",
                     multiprocess_mode="livesum")
HSM_SESSIONS_IN_USE = Gauge("certs_hsm_sessions_in_use",
                            "HSM operations running now (on a session, or waiting for one).",
                            multiprocess_mode="livesum")
HSM_ERRORS = Counter("certs_hsm_errors", "HSM operations that failed, by kind.", ["kind"])
IDENTITY_SECONDS = Histogram(
    "certs_identity_request_seconds", "Duration of the gRPC identity calls.",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
IDENTITY_ERRORS = Counter("certs_identity_errors", "Failed gRPC identity calls, by status.",
                          ["service", "method", "code"])

EXPIRING_CACHE_SECONDS = 5.0
# Shown at 0 from the start, so an alert on them has a series to watch.
for _kind in ("unavailable", "key_not_found", "pin_rejected", "seal_error", "token_not_found"):
    HSM_ERRORS.labels(kind=_kind)


def count_change(record: audit.AuditRecord) -> None:
    """Count the certificates one committed change issued and revoked."""
    if record.issued:
        CERTS_ISSUED.labels(path=record.action).inc(len(record.issued))
    if record.revoked:
        CERTS_REVOKED.labels(path=record.action, reason=record.reason or "unspecified").inc(
            len(record.revoked))


audit.subscribe(count_change)


def hsm_error_kind(exc: BaseException) -> str:
    """A short label for an HSM failure: unavailable, key_not_found, pin_rejected, ..."""
    name = type(exc).__name__
    if name == "HsmUnavailable":
        return "unavailable"
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def watch_hsm(connection: Any) -> None:
    """Count the pool, the sessions in use and the failures of every operation on an
    ``hsm.connection.HsmConnection`` (once per connection)."""
    if getattr(connection, "_certs_watched", False):
        return
    run = connection.run

    def watched(operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        HSM_SESSIONS_IN_USE.inc()
        try:
            return run(operation, *args, **kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith("hsm."):
                HSM_ERRORS.labels(kind=hsm_error_kind(exc)).inc()
            raise
        finally:
            HSM_SESSIONS_IN_USE.dec()

    connection.run = watched
    connection._certs_watched = True
    HSM_SESSIONS.inc(connection.config.pool_size)


def time_signing(signer: Any, span: Callable[[str], Any]) -> None:
    """Time every signature of an ``hsm.ca_key.CaSigner`` (and trace it as ``span``)."""
    if getattr(signer, "_certs_timed", False):
        return
    sign = signer.sign

    def timed(message: bytes, wait_seconds: float | None = None) -> bytes:
        started = time.perf_counter()
        with span("hsm.sign"):
            try:
                return sign(message, wait_seconds)
            finally:
                HSM_SIGN_SECONDS.observe(time.perf_counter() - started)

    # The signer is a frozen dataclass; the wrapper is an instance attribute on purpose.
    object.__setattr__(signer, "sign", timed)
    object.__setattr__(signer, "_certs_timed", True)


def instrument(authority: Any, store: Any, crl: Any) -> None:
    """Metrics and spans for a CA (``hsm.authority.CertificateAuthority``), its store and CRL
    publisher: HSM pool, errors and signing time; a span per database transaction and per
    CRL publication. Each object is instrumented once."""
    watch_hsm(authority.connection)
    time_signing(authority.signer, tracing.leaf_span)
    tracing.trace_transactions(store.engine)
    store.observe_reads(tracing.database_read_spans(store.engine.dialect.name))
    if not getattr(crl, "_certs_traced", False):
        # Where the publisher signs a CRL: on its own, or inside a revoking transaction.
        for method in ("_publish_locked", "_sign_with"):
            if hasattr(crl, method):
                setattr(crl, method, tracing.traced(getattr(crl, method), "crl.publish"))
        crl._certs_traced = True


class ScrapeFigures:
    """The figures computed when /metrics is read: CA expiry, CRL age, expiring counts (the
    counts come from the database at most every few seconds)."""

    def __init__(self, ca_not_after: datetime, crl_path: str, renew_window: timedelta,
                 count_expiring: Callable[[datetime], int]) -> None:
        self._ca_not_after = ca_not_after
        self._crl_path = Path(crl_path)
        self._renew_window = renew_window
        self._count = count_expiring
        self._counted_at = float("-inf")

    def refresh(self) -> None:
        """Update the gauges (blocking: may query the database)."""
        now = datetime.now(UTC)
        CA_EXPIRY.set((self._ca_not_after - now).total_seconds())
        try:
            CRL_AGE.set(time.time() - self._crl_path.stat().st_mtime)
        except OSError:
            pass
        if time.monotonic() - self._counted_at >= EXPIRING_CACHE_SECONDS:
            EXPIRING.labels(within="renew_window").set(self._count(now + self._renew_window))
            EXPIRING.labels(within="1d").set(self._count(now + timedelta(days=1)))
            self._counted_at = time.monotonic()
