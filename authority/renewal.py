"""The renewal policy: how long a renewed certificate lives, for the API and the rotation loop."""

from datetime import datetime, timedelta

from hsm.certificate import CLOCK_SKEW

# The rotation loop renews a certificate once at most 1/DUE_DIVISOR of its lifetime is left.
DUE_DIVISOR = 3
# A renewal cut short by the CA's notAfter must extend the expiry at least this much.
MIN_CAPPED_GAIN = timedelta(days=1)


class NotRenewable(Exception):
    """Renewing would not give the thing a certificate that lasts longer (the CA expires)."""


def issued_lifetime(not_before: datetime | None, expires_at: datetime,
                    default: timedelta) -> timedelta:
    """The ttl a certificate was issued with (notBefore carries the clock-skew allowance)."""
    if not_before is None:
        return default
    return expires_at - (not_before + CLOCK_SKEW)


def is_due(not_before: datetime | None, expires_at: datetime, now: datetime,
           window: timedelta) -> bool:
    """Whether the rotation loop renews this certificate now (SPEC 9): not expired, and its
    remaining lifetime at most both ``window`` and a third of its whole lifetime (a record
    imported from the Go service, with no notBefore, by the window alone)."""
    remaining = expires_at - now
    if remaining <= timedelta(0) or remaining > window:
        return False
    if not_before is None:
        return True
    return remaining * DUE_DIVISOR <= expires_at - not_before


def renewal_lifetime(
    *,
    not_before: datetime | None,
    expires_at: datetime,
    default_ttl: timedelta,
    ca_not_after: datetime,
    now: datetime,
) -> timedelta:
    """The ttl of the certificate that renews one valid from ``not_before`` to ``expires_at``,
    issued at ``now`` (whole seconds): the same lifetime, cut at the CA's notAfter.

    NotRenewable when the CA has expired, or when the cut renewal would outlive the old
    certificate by less than MIN_CAPPED_GAIN (not worth it, and due again at every run).
    """
    ttl = issued_lifetime(not_before, expires_at, default_ttl)
    ttl = timedelta(seconds=round(ttl.total_seconds()))
    if ttl <= timedelta(0):
        ttl = default_ttl
    cap = ca_not_after.replace(microsecond=0) - timedelta(seconds=1)
    if cap <= now:
        raise NotRenewable("the CA certificate has expired")
    if now + ttl >= cap:
        if cap - expires_at < MIN_CAPPED_GAIN:
            raise NotRenewable("the CA certificate expires before a renewal would outlive "
                               "this certificate")
        ttl = cap - now
    return ttl
