"""The outbox relay: publishes the rotation events waiting in the outbox to NATS.

Events are taken from the outbox with a lease (``Store.pending_events(owner=...)``), so several
relays (one per scheduler process) never hold the same event at once. A batch is published
and then flushed (a PING/PONG round trip: the server has processed every message before it
answers); only then are the events deleted. When NATS is down, or the connection breaks before
the flush returns, nothing is deleted: the relay backs off (exponentially, capped, with jitter),
reconnects, and publishes the same batch again while its lease lasts, or leases the events
afresh. Events therefore leave the outbox only after NATS accepted them, and are delivered at
least once; a duplicate needs the connection to break after the server received a batch and
before the flush answered. Each message carries the header ``Nats-Msg-Id`` (``message_id``:
a digest of the event's envelope, which names the new serial, so the same for every attempt
and unique across events even when outbox ids are reused), so a JetStream stream on these
subjects drops such duplicates and a consumer can too.

The relay keeps its own connection and does not use the client's reconnect buffer, so a
message is never sent from a stale buffer behind the relay's back.
"""

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from datetime import timedelta

import nats
import nats.errors
from nats.aio.client import Client

from repository import OutboxEvent, Store
from scheduler import metrics
from scheduler._sleep import sleep_or_stop
from scheduler.rotation import worker_id

log = logging.getLogger("certs.relay")

# Errors of one message that a retry cannot fix: the event stays in the outbox for an operator.
_POISON = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError)


def message_id(event: OutboxEvent) -> str:
    """The event's ``Nats-Msg-Id``: stable across attempts, unique across events."""
    return "certs-" + hashlib.sha256(event.payload).hexdigest()[:32]


class OutboxRelay:
    """Drains the outbox to NATS at ``broker_url`` (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        broker_url: str,
        *,
        owner: str | None = None,
        batch: int = 100,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: float = 1.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 2.0,
        flush_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.servers = [url.strip() for url in broker_url.split(",") if url.strip()]
        self.owner = owner or worker_id()
        self.batch = batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.flush_timeout = flush_timeout
        self.failures = 0
        self._nc: Client | None = None
        self._held: list[OutboxEvent] = []
        self._held_until = 0.0
        self._undeleted: list[int] = []
        self._wake = asyncio.Event()
        self._down = False

    def wake(self) -> None:
        """Drain now instead of at the next poll (new events were just written)."""
        self._wake.set()

    async def drain(self) -> int:
        """Publish every pending event now; returns how many were published.

        Raises when NATS or the database fails; what was not confirmed stays in the outbox.
        """
        sent = 0
        while True:
            if self._undeleted:
                await asyncio.to_thread(self.store.delete_events, self._undeleted)
                self._undeleted = []
            events = await self._next_batch()
            if not events:
                return sent
            nc = await self._connection()
            ids: list[int] = []
            for event in events:
                try:
                    await nc.publish(event.subject, event.payload,
                                     headers={"Nats-Msg-Id": message_id(event)})
                except _POISON as exc:
                    log.error("outbox event %d cannot be published (%s); it stays in the outbox",
                              event.id, type(exc).__name__)
                    continue
                ids.append(event.id)
            await nc.flush(timeout=self.flush_timeout)  # type: ignore[arg-type]
            # NATS has them: never publish these again, even if deleting fails now.
            self._held, self._undeleted = [], ids
            await asyncio.to_thread(self.store.delete_events, ids)
            self._undeleted = []
            sent += len(ids)
            metrics.EVENTS_PUBLISHED.inc(len(ids))
            if len(events) < self.batch:
                return sent

    async def _next_batch(self) -> list[OutboxEvent]:
        if self._held and time.monotonic() < self._held_until:
            return self._held
        self._held = []
        taken = time.monotonic()
        events = await asyncio.to_thread(
            self.store.pending_events, self.batch, owner=self.owner, lease=self.lease)
        # Publish a held batch again only well within its lease, so no other relay has it.
        self._held, self._held_until = events, taken + self.lease.total_seconds() * 0.8
        return events

    async def _connection(self) -> Client:
        if self._nc is not None and self._nc.is_connected:
            return self._nc
        await self.close()
        self._nc = await nats.connect(
            servers=self.servers, name="certs-scheduler", allow_reconnect=False,
            connect_timeout=self.connect_timeout,
            # The client's own retry loop: each server tried twice at once, then NoServersError
            # (0 would mean "forever"); the relay's back-off does the rest.
            max_reconnect_attempts=1, reconnect_time_wait=0,
            error_cb=self._on_error, disconnected_cb=self._on_event, closed_cb=self._on_event,
        )
        return self._nc

    async def close(self) -> None:
        """Close the NATS connection (a later drain opens a new one)."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), timeout=2)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS connection error: %s", type(exc).__name__)

    async def _on_event(self) -> None:
        return None

    async def refresh_backlog(self) -> int:
        """Read the outbox size into the ``certs_outbox_backlog`` gauge."""
        size = await asyncio.to_thread(self.store.outbox_size)
        metrics.OUTBOX_BACKLOG.set(size)
        return size

    async def run(self, stop: asyncio.Event) -> None:
        """Drain until ``stop`` is set: on wake-ups, every poll interval, and with back-off
        while NATS or the database is down."""
        backoff = self.backoff_initial
        next_backlog = 0.0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    sent = await self.drain()
                except Exception as exc:  # noqa: BLE001 - the relay outlives any failure
                    self._failed(exc)
                    await self.close()
                    delay = backoff * random.uniform(0.5, 1.0)
                    backoff = min(backoff * 2, self.backoff_max)
                    await sleep_or_stop(stop, delay)
                    continue
                if self._down:
                    self._down = False
                    log.warning("outbox relay publishing again")
                backoff = self.backoff_initial
                if sent or time.monotonic() >= next_backlog:
                    with contextlib.suppress(Exception):
                        await self.refresh_backlog()
                    next_backlog = time.monotonic() + max(self.poll_interval, 5.0)
                await sleep_or_stop(stop, self.poll_interval, self._wake)
        finally:
            await self.close()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        metrics.RELAY_FAILURES.inc()
        level = logging.DEBUG if self._down else logging.WARNING
        self._down = True
        log.log(level, "outbox relay cannot publish (%s: %s); retrying",
                type(exc).__name__, exc)

