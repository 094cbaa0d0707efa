"""When to send a request again, and how long to wait first.

Only requests that are safe to repeat are retried (`Call.repeatable`): every GET (view, lists,
CRL, CA, download) and DELETE (revoke). They are retried when the service answers 503 (a
dependency is down; SPEC: a 503 leaves nothing changed) or when no connection could be made
(nothing was sent). Issue (POST), rotate (POST) and renew (PUT) are never retried: each
repetition could create another certificate. A timeout is not retried: the request may have
been processed, and the caller's time budget is spent.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

RetryHook = Callable[["RetryEvent"], None]


@dataclass(frozen=True)
class RetryEvent:
    """Passed to `on_retry` before each wait: attempt that failed (1-based) and why."""

    method: str
    path: str
    attempt: int
    reason: str  # "503 <message>" or "connection failed"
    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` requests at most (1 disables retries); waits grow from `initial` by `factor`
    up to `maximum` seconds, with up to `jitter` (a fraction) added. A `Retry-After` header
    in seconds is honoured, capped at `maximum`."""

    attempts: int = 4
    initial: float = 0.25
    factor: float = 2.0
    maximum: float = 4.0
    jitter: float = 0.1

    @classmethod
    def disabled(cls) -> RetryPolicy:
        return cls(attempts=1)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after.strip()), self.maximum)
        base = min(self.maximum, self.initial * self.factor ** (attempt - 1))
        return base * (1.0 + random.uniform(0.0, self.jitter))
