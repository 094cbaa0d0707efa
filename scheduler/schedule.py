"""When the background work runs: rotation at start and daily, the relay, the CRL refresh.

- Rotation runs once at start, then every day at ``MF_CERTS_CHECK_TIME`` (UTC). A run that
  fails as a whole (e.g. the database is down while claiming) is retried after
  ``retry_interval``; certificates that failed one by one wait for the next daily run.
- The outbox relay runs all the time (woken up right after rotations).
- The CRL is checked every ``min(validity / 4, 60 s)`` and re-signed when half of its validity
  has passed or another process revoked something (``CrlPublisher.ensure_current``), so it is
  never stale even without revocations.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol

from authority.crl_publisher import PublishedCrl
from scheduler._sleep import sleep_or_stop
from scheduler.relay import OutboxRelay
from scheduler.rotation import Rotator

log = logging.getLogger("certs.scheduler")


class CrlRefresh(Protocol):
    def ensure_current(self) -> PublishedCrl: ...


def next_daily_run(after: datetime, at: time) -> datetime:
    """The first moment strictly after ``after`` whose UTC time of day is ``at``."""
    after = after.astimezone(UTC)
    candidate = after.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    if candidate <= after:
        candidate += timedelta(days=1)
    return candidate


def crl_check_interval(validity: timedelta) -> float:
    """Seconds between CRL freshness checks: a quarter of the validity, at most a minute."""
    return max(0.25, min(validity.total_seconds() / 4, 60.0))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Runs the rotation loop, the outbox relay and the CRL refresh until stopped."""

    def __init__(
        self,
        rotator: Rotator | None,
        relay: OutboxRelay | None,
        crl: CrlRefresh | None,
        *,
        check_time: time = time(2, 0),
        crl_validity: timedelta = timedelta(hours=24),
        retry_interval: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.rotator = rotator
        self.relay = relay
        self.crl = crl
        self.check_time = check_time
        self.crl_interval = crl_check_interval(crl_validity)
        self.retry_interval = retry_interval
        self._clock = clock
        self.crl_checks = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; then the loops end and the NATS connection is closed."""
        jobs: list[Coroutine[Any, Any, None]] = []
        if self.crl is not None:
            jobs.append(self.crl_loop(stop))
        if self.relay is not None:
            jobs.append(self.relay.run(stop))
        if self.rotator is not None:
            jobs.append(self.rotation_loop(stop))
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await stop.wait()
        finally:
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background loop ended: %r", task.exception())

    async def rotation_loop(self, stop: asyncio.Event) -> None:
        assert self.rotator is not None
        while not stop.is_set():
            run = asyncio.create_task(self.rotator.run_once())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not run.done():  # stopping: whole rotations only, see Rotator
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
                return
            try:
                run.result()
                wake_at = next_daily_run(self._clock(), self.check_time)
            except Exception as exc:  # noqa: BLE001 - the loop outlives any failure
                log.error("rotation run failed (%s: %s); retrying in %s",
                          type(exc).__name__, exc, self.retry_interval)
                wake_at = min(self._clock() + self.retry_interval,
                              next_daily_run(self._clock(), self.check_time))
            await self._sleep_until(stop, wake_at)

    async def _sleep_until(self, stop: asyncio.Event, moment: datetime) -> None:
        # In short steps, so a wall-clock jump (NTP, suspend) moves the run with it.
        while not stop.is_set():
            left = (moment - self._clock()).total_seconds()
            if left <= 0:
                return
            await sleep_or_stop(stop, min(left, 30.0))

    async def crl_loop(self, stop: asyncio.Event) -> None:
        assert self.crl is not None
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.crl.ensure_current)
                self.crl_checks += 1
            except Exception as exc:  # noqa: BLE001 - the loop outlives any failure
                log.error("CRL refresh failed (%s: %s)", type(exc).__name__, exc)
            await sleep_or_stop(stop, self.crl_interval)
