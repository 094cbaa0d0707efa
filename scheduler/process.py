"""The scheduler process: rotation, outbox relay and CRL refresh built from ``Settings``.

``run_scheduler(settings)`` is what ``python -m scheduler`` (and so ``certs serve``, which
starts it next to the HTTP workers) runs. It opens its own HSM session pool and database
engine; it does not run migrations (``certs serve`` / ``certs migrate`` do). Any number of
these processes may share one PostgreSQL: claims and outbox leases keep their work apart.

When its HSM connection becomes unrecoverable (hsm/faults.py) it stops and exits with
``EXIT_REPLACE``, and its supervisor starts a new one at once. A scheduler that cannot open the
HSM at start waits, probing it in a child process, and exits with ``EXIT_REPLACE`` once it
signs again, instead of dying and being restarted in a loop.
"""

import asyncio
import contextlib
import json
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from authority import fitness
from authority.crl_publisher import CrlPublisher
from authority.identity import ThingsClient
from authority.settings import Settings
from authority.wiring import open_authority, open_crl, open_store, open_things
from hsm.authority import CertificateAuthority
from hsm.errors import HsmError
from repository import Store
from scheduler.platform_events import PlatformEvents, from_store
from scheduler.relay import OutboxRelay
from scheduler.rotation import Rotator, SubjectResolver, worker_id
from scheduler.schedule import Scheduler

log = logging.getLogger("certs.scheduler")


@dataclass(frozen=True)
class Tuning:
    """Knobs that are not ``MF_*`` settings (command-line options of ``python -m scheduler``)."""

    batch: int = 20
    concurrency: int = 2
    claim_lease: timedelta = timedelta(minutes=15)
    relay_batch: int = 100
    relay_lease: timedelta = timedelta(seconds=30)
    relay_poll: float = 1.0
    relay_backoff_max: float = 10.0
    retry_interval: timedelta = timedelta(minutes=15)
    relay: bool = True


@dataclass
class SchedulerComponents:
    authority: CertificateAuthority
    store: Store
    crl: CrlPublisher
    rotator: Rotator
    relay: OutboxRelay | None
    scheduler: Scheduler
    things: ThingsClient | None = None
    owner: str = field(default_factory=worker_id)
    events: PlatformEvents | None = None

    async def close(self) -> None:
        if self.things is not None:
            await self.things.close()
        self.store.engine.dispose()


def build_scheduler(
    settings: Settings,
    authority: CertificateAuthority | None = None,
    tuning: Tuning = Tuning(),
) -> SchedulerComponents:
    """Every component of the scheduler process, opened in this process."""
    if authority is None:
        authority = open_authority(settings)
    owner = worker_id()
    store = open_store(settings, authority, pool_size=4, max_overflow=4)
    crl = open_crl(settings, authority, store)
    things: ThingsClient | None = None
    subject_for: SubjectResolver | None = None
    if settings.subject_cn == "thing_key":
        things = open_things(settings)
        subject_for = things.thing_key
    relay = None
    if tuning.relay:
        relay = OutboxRelay(store, settings.broker_url, owner=owner, batch=tuning.relay_batch,
                            lease=tuning.relay_lease, poll_interval=tuning.relay_poll,
                            backoff_max=tuning.relay_backoff_max)
    rotator = Rotator(
        authority, store, crl, renew_window=settings.renew_window,
        default_ttl=settings.hours_valid, owner=owner, batch=tuning.batch,
        lease=tuning.claim_lease, concurrency=tuning.concurrency, subject_for=subject_for,
        on_rotated=relay.wake if relay is not None else None,
        event_keys=settings.event_keys == "include",
    )
    scheduler = Scheduler(rotator, relay, crl, check_time=settings.check_time,
                          crl_validity=settings.crl_validity,
                          retry_interval=tuning.retry_interval)
    events = None
    if settings.es_url:
        events = from_store(settings.es_url, store, crl, consumer=owner)
    return SchedulerComponents(authority, store, crl, rotator, relay, scheduler, things, owner,
                               events)




async def serve(components: SchedulerComponents, stop: asyncio.Event) -> None:
    """Run the scheduler until ``stop`` is set."""
    log.info("scheduler %s started", components.owner)
    events = None
    if components.events is not None:
        events = asyncio.create_task(components.events.run(stop))
    try:
        await components.scheduler.run(stop)
    finally:
        if events is not None:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(events, timeout=10)
        await components.close()
        log.info("scheduler %s stopped", components.owner)


async def run_once(components: SchedulerComponents) -> dict[str, object]:
    """One rotation run, the CRL brought up to date, and one drain of the outbox."""
    try:
        report = await components.rotator.run_once()
        result: dict[str, object] = report.to_dict()
        crl = await asyncio.to_thread(components.crl.ensure_current)
        result["crl_number"] = crl.number
        if components.relay is not None:
            try:
                result["published"] = await components.relay.drain()
            except Exception as exc:  # noqa: BLE001 - reported in the output
                result["publish_error"] = f"{type(exc).__name__}: {exc}"
            finally:
                await components.relay.close()
        return result
    finally:
        await components.close()


def run_scheduler(settings: Settings, *, once: bool = False, tuning: Tuning = Tuning()) -> int:
    """Blocking entry point; SIGTERM or SIGINT stop it cleanly. Returns an exit status.

    With ``once`` it does one rotation run, brings the CRL up to date, drains the outbox once
    and prints the run's report as JSON.
    """
    if once:
        components = build_scheduler(settings, tuning=tuning)
        print(json.dumps(asyncio.run(run_once(components))), flush=True)
        return 0
    try:
        components = build_scheduler(settings, tuning=tuning)
    except HsmError as exc:
        return _wait_for_hsm(settings, exc)
    unfit: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, stop.set)
        stopped = threading.Event()

        def replace_me(reason: str) -> None:
            unfit.append(reason)
            loop.call_soon_threadsafe(stop.set)

        fitness.watch(components.authority, settings, role="scheduler", degraded=None,
                      on_usable=replace_me, stop=stopped)
        try:
            await serve(components, stop)
        finally:
            stopped.set()

    asyncio.run(main())
    return fitness.EXIT_REPLACE if unfit else 0


def _wait_for_hsm(settings: Settings, exc: HsmError) -> int:
    """No HSM at start: probe it until it signs, then ask to be started again."""
    log.error(json.dumps({"event": "scheduler.waiting_for_hsm", "reason": str(exc)}))
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    if fitness.wait_until_usable(settings, stop, role="scheduler"):
        return fitness.EXIT_REPLACE
    stop.wait()  # the PIN was refused: wait for the operator rather than try it again
    return 0
