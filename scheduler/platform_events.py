"""Platform events (SPEC section 14): removed things lose their certificates.

Mainflux writes an entry to the Redis stream ``mainflux.things`` for every change of a thing
or group. This consumer reads it through the consumer group ``certs`` (created at the end of
the stream when missing, so a new group sees new events only), under a consumer name unique
to the process. ``operation=thing.remove`` (field ``id``) and ``operation=group.remove``
(field ``thing_ids``, comma-separated) revoke every active certificate of those things, one
database transaction per event (``revoke_things``); the CRL is then re-signed to cover them
(``cover_crl``) and only then is the entry acknowledged (XACK). Other operations are
acknowledged and ignored.

Nothing is lost:

- An entry that was read but not acknowledged (the process died, or the database failed)
  stays pending in the group. This consumer reads its own pending entries again after a
  failure, and every ``claim_interval`` it takes over entries that some consumer has held
  longer than ``claim_idle`` (XAUTOCLAIM: a consumer that died, or the previous process), also
  at start.
- Redis down: the consumer backs off (exponentially, capped, with jitter) and reconnects; the
  scheduler keeps running. When the group has vanished (Redis lost its data) it is created again
  from the start of the stream, so entries written since are not skipped.
- The database down: nothing is acknowledged; the entries are retried with back-off.

An entry handled twice changes nothing more: its things have no active certificate left.
A CRL that cannot be re-signed does not hold the acknowledgement back (the revocations did
commit; the scheduler's CRL refresh re-signs it as soon as it can).
"""

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from authority.event_stream import GROUP, STREAM
from repository import Revocation, Store
from scheduler import metrics
from scheduler._sleep import sleep_or_stop
from scheduler.rotation import worker_id

log = logging.getLogger("certs.events")

THING_REMOVE = "thing.remove"
GROUP_REMOVE = "group.remove"

RevokeThings = Callable[[Sequence[str]], Sequence[Revocation]]
CoverCrl = Callable[[int], object]
Entry = tuple[str, Mapping[str, str]]


def removed_things(fields: Mapping[str, str]) -> list[str] | None:
    """The things an event removes (possibly none), or None for an event to ignore."""
    operation = fields.get("operation")
    if operation == THING_REMOVE:
        thing = fields.get("id", "").strip()
        return [thing] if thing else []
    if operation == GROUP_REMOVE:
        return [t.strip() for t in fields.get("thing_ids", "").split(",") if t.strip()]
    return None


@dataclass
class EventsStatus:
    """What ``/health`` can show: whether Redis answers, and the last failure."""

    enabled: bool = True
    connected: bool = False
    last_error: str = ""
    handled: int = 0
    ignored: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _StoreFailed(Exception):
    """Internal: an event could not be applied; its entry stays pending."""


class PlatformEvents:
    """Consumes the platform's thing events (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        revoke_things: RevokeThings,
        cover_crl: CoverCrl,
        stream: str = STREAM,
        group: str = GROUP,
        consumer: str | None = None,
        batch: int = 50,
        block: float = 1.0,
        claim_idle: float = 30.0,
        claim_interval: float = 10.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 2.0,
        prune_idle: float = 86400.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or worker_id()
        self.batch = batch
        self.block = block
        self.claim_idle = claim_idle
        self.claim_interval = claim_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.prune_idle = prune_idle
        self.status = EventsStatus()
        self._revoke_things = revoke_things
        self._cover_crl = cover_crl
        self._client: aioredis.Redis | None = None
        self._group_ready = False
        self._group_lost = False
        self._own_pending = True
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._next_prune = 0.0

    # ------------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; never raises for Redis or database failures."""
        backoff = self.backoff_initial
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
                    await self.close()
                except _StoreFailed:
                    pass
                except Exception as exc:  # noqa: BLE001 - the consumer outlives any failure
                    self._redis_failed(exc)
                    await self.close()
                else:
                    backoff = self.backoff_initial
                    continue
                await sleep_or_stop(stop, backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max)
        finally:
            await self.close()

    async def step(self) -> int:
        """One read (claimed, own pending or new entries) and its handling; returns how many
        entries were acknowledged. Raises RedisError, or _StoreFailed after a database error."""
        client = await self._connection()
        now = time.monotonic()
        if now >= self._next_claim:
            entries = await self._autoclaim(client)
        elif self._own_pending:
            entries = await self._read(client, "0", block=None)
            self._own_pending = bool(entries)
        else:
            entries = await self._read(client, ">", block=self.block)
        return await self._handle(client, entries)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), timeout=2)

    # ------------------------------------------------------------ Redis side

    async def _connection(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=self.connect_timeout,
                socket_timeout=self.block + self.connect_timeout + 5,
                retry=Retry(NoBackoff(), 0), client_name="certs-events",
            )
        if not self._group_ready:
            await self._create_group(self._client)
        return self._client

    async def _create_group(self, client: aioredis.Redis) -> None:
        # A group that vanished while this process had it (Redis lost its data): every entry
        # now in the stream came after, so none is skipped.
        start = "0" if self._group_lost else "$"
        try:
            await client.xgroup_create(self.stream, self.group, id=start, mkstream=True)
            log.info(json.dumps({"msg": "consumer group created", "stream": self.stream,
                                 "group": self.group, "from": start}))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True
        self._connected()

    async def _read(self, client: aioredis.Redis, start: str, block: float | None) -> list[Entry]:
        try:
            reply: Any = await client.xreadgroup(
                self.group, self.consumer, {self.stream: start}, count=self.batch,
                block=int(block * 1000) if block is not None else None)
        except ResponseError as exc:
            self._check_group(exc)
            raise
        self._connected()
        entries: list[Entry] = []
        for _stream, items in reply or []:
            entries.extend((entry_id, fields or {}) for entry_id, fields in items)
        return entries

    async def _autoclaim(self, client: aioredis.Redis) -> list[Entry]:
        """One page of entries idle longer than ``claim_idle`` in any consumer, now ours."""
        try:
            reply: Any = await client.xautoclaim(
                self.stream, self.group, self.consumer, int(self.claim_idle * 1000),
                start_id=self._claim_cursor, count=self.batch)
        except ResponseError as exc:
            self._check_group(exc)
            raise
        self._connected()
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # trimmed from the stream while pending: nothing left to apply
            await client.xack(self.stream, self.group, *deleted)
        self._claim_cursor = cursor
        if cursor == "0-0":
            self._next_claim = time.monotonic() + self.claim_interval
            if not claimed and time.monotonic() >= self._next_prune:
                await self._prune_consumers(client)
        entries = [(entry_id, fields or {}) for entry_id, fields in claimed]
        if entries:
            log.info(json.dumps({"msg": "pending platform events claimed",
                                 "consumer": self.consumer, "count": len(entries)}))
        return entries

    async def _prune_consumers(self, client: aioredis.Redis) -> None:
        """Forget consumers (earlier processes) idle for a day with nothing pending: every
        restart adds a name to the group. A live one is only re-added by its next read."""
        self._next_prune = time.monotonic() + 3600
        consumers: Any = await client.xinfo_consumers(self.stream, self.group)
        for info in consumers:
            name = info.get("name")
            if (name != self.consumer and not info.get("pending")
                    and int(info.get("idle") or 0) >= self.prune_idle * 1000):
                await client.xgroup_delconsumer(self.stream, self.group, name)

    def _check_group(self, exc: ResponseError) -> None:
        if "NOGROUP" in str(exc):
            self._group_ready, self._group_lost = False, True

    # --------------------------------------------------------- handling

    async def _handle(self, client: aioredis.Redis, entries: list[Entry]) -> int:
        """Apply the entries one transaction each, cover the CRL once, acknowledge them."""
        done: list[str] = []
        newest = 0
        failure: Exception | None = None
        for entry_id, fields in entries:
            things = removed_things(fields)
            if things is None or not things:
                self._ignored(entry_id, fields, things)
                done.append(entry_id)
                continue
            try:
                revocations = await asyncio.to_thread(self._revoke_things, things)
            except Exception as exc:  # noqa: BLE001 - retried; the entry stays pending
                failure = exc
                break
            newest = max([newest, *(r.seq for r in revocations)])
            self._handled(entry_id, fields, things, revocations)
            done.append(entry_id)
        if newest:
            await self._cover(newest)
        if done:
            await client.xack(self.stream, self.group, *done)
        if failure is not None:
            self._store_failed(failure)
            raise _StoreFailed() from failure
        return len(done)

    async def _cover(self, seq: int) -> None:
        try:
            await asyncio.to_thread(self._cover_crl, seq)
        except Exception as exc:  # noqa: BLE001 - the revocations committed; refresh retries
            log.error(json.dumps({"msg": "CRL not re-signed after platform event",
                                  "revocation_seq": seq,
                                  "error": f"{type(exc).__name__}: {exc}"}))

    # ------------------------------------------------------ status and logs

    def _connected(self) -> None:
        if not self.status.connected:
            self.status.connected = True
            metrics.PLATFORM_EVENTS_CONNECTED.set(1)
            log.info(json.dumps({"msg": "platform events connected", "stream": self.stream,
                                 "group": self.group, "consumer": self.consumer}))

    def _redis_failed(self, exc: Exception) -> None:
        # An acknowledgement may not have reached Redis: read our pending entries first.
        self._group_ready, self._own_pending = False, True
        self.status.last_error = f"redis: {type(exc).__name__}"
        level = logging.DEBUG if not self.status.connected else logging.WARNING
        if self.status.connected:
            self.status.connected = False
            metrics.PLATFORM_EVENTS_CONNECTED.set(0)
        log.log(level, json.dumps({"msg": "platform events: Redis unavailable; retrying",
                                   "error": f"{type(exc).__name__}: {exc}"}))

    def _store_failed(self, exc: Exception) -> None:
        self._own_pending = True
        self.status.failed += 1
        self.status.last_error = f"database: {type(exc).__name__}"
        metrics.PLATFORM_EVENTS_FAILED.inc()
        log.warning(json.dumps({"msg": "platform event not applied; retrying",
                                "error": f"{type(exc).__name__}: {exc}"}))

    def _ignored(self, entry_id: str, fields: Mapping[str, str], things: list[str] | None) -> None:
        self.status.ignored += 1
        metrics.PLATFORM_EVENTS_IGNORED.inc()
        if things is not None:  # a removal that names no thing
            log.warning(json.dumps({"msg": "platform event names no thing", "id": entry_id,
                                    "operation": fields.get("operation")}))

    def _handled(self, entry_id: str, fields: Mapping[str, str], things: list[str],
                 revocations: Sequence[Revocation]) -> None:
        self.status.handled += 1
        self.status.last_error = ""
        metrics.PLATFORM_EVENTS_HANDLED.inc()
        metrics.PLATFORM_EVENT_REVOCATIONS.inc(len(revocations))
        log.info(json.dumps({"msg": "platform event", "id": entry_id,
                             "operation": fields.get("operation"), "things": things,
                             "revoked": [r.serial for r in revocations]}))


class CrlCovering(Protocol):
    def ensure_covers(self, revocation_seq: int) -> object: ...


def from_store(url: str, store: Store, crl: CrlCovering, **options: Any) -> PlatformEvents:
    """A consumer that revokes in ``store`` (``Store.revoke_things``) and re-signs with ``crl``
    (``CrlPublisher.ensure_covers``)."""
    return PlatformEvents(url, revoke_things=store.revoke_things, cover_crl=crl.ensure_covers,
                          **options)
