"""Platform events (SPEC section 14) against a real redis-server and the real store and CRL:
removed things lose exactly their certificates; Redis and the database failing for a while,
the consumer SIGKILLed between reading and acknowledging, and two consumers on one stream
lose no event and apply none twice."""

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from cryptography import x509
from sqlalchemy import select
from sqlalchemy.engine import make_url

from authority.crl_publisher import CrlPublisher
from authority.event_stream import GROUP, STREAM, group_health
from hsm.authority import CertificateAuthority
from repository import Certificate, NotFound, RevocationReason, Store, create_engine_for, migrate
from repository.schema import revoked_certs
from scheduler.platform_events import PlatformEvents, from_store, removed_things
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.redis import RedisServer
from tests.scheduler.conftest import REPO_ROOT
from tests.scheduler.helpers import issue_due
from tests.scheduler.test_processes import scrape

WAIT = 60.0


# ----------------------------------------------------------------- helpers


def issue(store: Store, authority: CertificateAuthority, thing: str) -> Certificate:
    """A stored certificate that is not due for rotation (the scheduler leaves it alone)."""
    return issue_due(store, authority, thing, lifetime=timedelta(days=30),
                     expires_in=timedelta(days=29))


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


async def async_wait_until(predicate: Callable[[], bool], timeout: float = WAIT,
                           what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)


def send(server: RedisServer, fields: dict[str, str], *, timeout: float = WAIT) -> str:
    """XADD, retried while Redis is down (as the platform's producer would)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with client(server) as r:
                return str(r.xadd(STREAM, fields))
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send_at_once(server: RedisServer, events: Sequence[dict[str, str]]) -> list[str]:
    """XADD in one MULTI/EXEC: a consumer blocked on the stream gets them in one read."""
    with client(server) as r, r.pipeline(transaction=True) as pipe:
        for fields in events:
            pipe.xadd(STREAM, fields)
        return [str(entry_id) for entry_id in pipe.execute()]


def group_exists(server: RedisServer) -> bool:
    try:
        with client(server) as r:
            groups: Any = r.xinfo_groups(STREAM)
    except redis.RedisError:
        return False
    return any(group["name"] == GROUP for group in groups)


def group_state(server: RedisServer) -> tuple[int, str]:
    """(pending entries, last delivered id) of the group."""
    with client(server) as r:
        groups: Any = r.xinfo_groups(STREAM)
    [group] = [g for g in groups if g["name"] == GROUP]
    return int(group["pending"]), str(group["last-delivered-id"])


def all_acknowledged(server: RedisServer, last_id: str) -> bool:
    try:
        pending, delivered = group_state(server)
    except (redis.RedisError, ValueError):
        return False
    return pending == 0 and delivered == last_id


def remove_thing(thing: str) -> dict[str, str]:
    return {"operation": "thing.remove", "id": thing}


def remove_group(group: str, things: Sequence[str]) -> dict[str, str]:
    return {"operation": "group.remove", "id": group, "thing_ids": ",".join(things)}


def revocation_counts(store: Store) -> Counter[str]:
    with store.engine.connect() as conn:
        return Counter(conn.execute(select(revoked_certs.c.serial)).scalars())


def revocation_seq(store: Store) -> int:
    return store.crl_state().revocation_seq


def crl_reasons(path: Path) -> dict[int, x509.ReasonFlags | None]:
    crl = x509.load_pem_x509_crl(path.read_bytes())
    reasons: dict[int, x509.ReasonFlags | None] = {}
    for entry in crl:
        try:
            reasons[entry.serial_number] = entry.extensions.get_extension_for_class(
                x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reasons[entry.serial_number] = None
    return reasons


def check_outcome(store: Store, crl_path: Path, removed: Sequence[str], kept: Sequence[str]
                  ) -> None:
    """Every certificate of ``removed`` revoked exactly once (cessationOfOperation, in the CRL
    on disk), every one of ``kept`` active and not in the CRL."""
    counts = revocation_counts(store)
    in_crl = crl_reasons(crl_path)
    for serial in removed:
        with pytest.raises(NotFound):
            store.get(serial)
        assert counts[serial] == 1, serial
        assert in_crl[int(serial, 16)] == x509.ReasonFlags.cessation_of_operation
    for serial in kept:
        assert store.get(serial).serial == serial
        assert counts[serial] == 0
        assert int(serial, 16) not in in_crl
    assert sum(counts.values()) == len(removed) == revocation_seq(store)


@pytest.fixture
async def stopped_consumers() -> AsyncIterator[list[tuple[asyncio.Task[None], asyncio.Event]]]:
    tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = []
    yield tasks
    for _task, stop in tasks:
        stop.set()
    for task, _stop in tasks:
        await asyncio.wait_for(task, timeout=15)


async def start_consumer(
    tasks: list[tuple[asyncio.Task[None], asyncio.Event]], server: RedisServer, store: Store,
    crl: CrlPublisher, **options: Any,
) -> PlatformEvents:
    options.setdefault("block", 0.2)
    options.setdefault("backoff_max", 0.5)
    consumer = from_store(server.url, store, crl, **options)
    stop = asyncio.Event()
    tasks.append((asyncio.create_task(consumer.run(stop)), stop))
    await async_wait_until(lambda: consumer.status.connected and group_exists(server),
                           what="consumer connected")
    return consumer


# ------------------------------------------------------------------ units


def test_removed_things_reads_the_two_removals_and_nothing_else() -> None:
    assert removed_things({"operation": "thing.remove", "id": "t1"}) == ["t1"]
    assert removed_things({"operation": "group.remove", "thing_ids": "a, b,,c"}) == \
        ["a", "b", "c"]
    assert removed_things({"operation": "thing.remove"}) == []
    assert removed_things({"operation": "group.remove", "id": "g"}) == []
    assert removed_things({"operation": "thing.create", "id": "t1"}) is None
    assert removed_things({}) is None


def test_revoke_things_revokes_every_active_certificate_of_those_things_once(
    store: Store, authority: CertificateAuthority,
) -> None:
    a1, a2 = issue(store, authority, "a"), issue(store, authority, "a")
    b1, c1 = issue(store, authority, "b"), issue(store, authority, "c")
    already = store.revoke(a2.serial)

    revocations = store.revoke_things(["a", "b", "a", "missing"])
    assert sorted(r.serial for r in revocations) == sorted([a1.serial, b1.serial])
    assert all(r.reason == RevocationReason.CESSATION_OF_OPERATION for r in revocations)
    assert sorted(r.seq for r in revocations) == [already.seq + 1, already.seq + 2]
    assert {r.thing_id for r in revocations} == {"a", "b"}
    for cert in (a1, a2, b1):
        with pytest.raises(NotFound):
            store.get(cert.serial)
    assert store.get(c1.serial, with_key=True).private_key_pem  # untouched, key still there
    assert store.revoke_things(["a", "b"]) == []
    assert store.revoke_things([]) == []
    counts = revocation_counts(store)
    assert counts == Counter({a1.serial: 1, a2.serial: 1, b1.serial: 1})
    with store.engine.connect() as conn:
        rows = conn.execute(select(revoked_certs.c.serial, revoked_certs.c.reason)).all()
    reasons = {row.serial: row.reason for row in rows}
    assert reasons[a1.serial] == reasons[b1.serial] == "cessation_of_operation"


# ------------------------------------------------------- in-process consumer


async def test_thing_and_group_removal_revoke_exactly_those_certificates(
    redis: RedisServer, store: Store, authority: CertificateAuthority,
    make_crl: Callable[..., CrlPublisher], crl_path: Path,
    stopped_consumers: list[tuple[asyncio.Task[None], asyncio.Event]],
) -> None:
    certs = {thing: [issue(store, authority, thing).serial for _ in range(2)]
             for thing in ("t1", "t2", "t3", "t4", "keep")}
    # Before the group exists: a new group starts with new events only.
    send(redis, remove_thing("t4"))
    crl = make_crl(store)
    crl.publish()
    consumer = await start_consumer(stopped_consumers, redis, store, crl)

    send(redis, {"operation": "thing.create", "id": "keep"})
    send(redis, remove_thing("t1"))
    send(redis, remove_group("g1", ["t2", "t3", "unknown-thing"]))
    last = send(redis, {"operation": "thing.update", "id": "keep", "name": "x"})
    await async_wait_until(lambda: all_acknowledged(redis, last), what="all acknowledged")

    removed = certs["t1"] + certs["t2"] + certs["t3"]
    check_outcome(store, crl_path, removed, certs["t4"] + certs["keep"])
    assert (consumer.status.handled, consumer.status.ignored, consumer.status.failed) == (2, 2, 0)
    # The same removals once more change nothing.
    last = send(redis, remove_group("g1", ["t1", "t2", "t3"]))
    await async_wait_until(lambda: all_acknowledged(redis, last), what="replay acknowledged")
    check_outcome(store, crl_path, removed, certs["t4"] + certs["keep"])


async def test_redis_stopped_and_started_while_events_are_sent(
    redis: RedisServer, store: Store, authority: CertificateAuthority,
    make_crl: Callable[..., CrlPublisher], crl_path: Path,
    stopped_consumers: list[tuple[asyncio.Task[None], asyncio.Event]],
) -> None:
    things = [f"thing-{i:02d}" for i in range(30)]
    serials = {thing: issue(store, authority, thing).serial for thing in things}
    kept = [issue(store, authority, "kept").serial]
    consumer = await start_consumer(stopped_consumers, redis, store, make_crl(store))
    sent: list[str] = []

    def producer() -> None:
        for thing in things:
            sent.append(send(redis, remove_thing(thing)))
            time.sleep(0.02)

    thread = threading.Thread(target=producer)
    thread.start()
    await async_wait_until(lambda: len(sent) >= 8, what="first events sent")
    redis.stop(kill=True)  # SIGKILL: only the fsynced append-only file is left
    await asyncio.sleep(1.5)
    assert not consumer.status.connected
    redis.start()
    await asyncio.sleep(0.5)
    redis.restart()  # and once more, with SIGTERM
    await asyncio.to_thread(thread.join, WAIT)
    assert len(sent) == len(things)
    await async_wait_until(lambda: all_acknowledged(redis, sent[-1]), what="all acknowledged")
    check_outcome(store, crl_path, list(serials.values()), kept)
    # A read that was cut by the second restart may still be backing off: it reconnects.
    await async_wait_until(lambda: consumer.status.connected, what="consumer reconnected")
    assert consumer.status.handled >= len(things)


@contextmanager
def database_unavailable(url: str, postgres: PostgresCluster | None) -> Iterator[None]:
    """SQLite: another connection holds the write lock. PostgreSQL: the database refuses
    connections and its sessions are terminated."""
    if postgres is None:
        blocker = sqlite3.connect(make_url(url).database or "", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        return
    name = make_url(url).database
    with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s", (name,))
    try:
        yield
    finally:
        with psycopg.connect(postgres.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_database_unavailable_for_a_while_nothing_acknowledged_then_applied(
    db_url: str, redis: RedisServer, authority: CertificateAuthority,
    make_crl: Callable[..., CrlPublisher], crl_path: Path, request: pytest.FixtureRequest,
    stopped_consumers: list[tuple[asyncio.Task[None], asyncio.Event]],
) -> None:
    migrate(db_url)
    store = Store(create_engine_for(db_url, busy_timeout_ms=200, connect_timeout=2),
                  authority.sealer)
    postgres = (request.getfixturevalue("postgres_server")
                if db_url.startswith("postgresql") else None)
    try:
        serials = {t: issue(store, authority, t).serial for t in ("d1", "d2", "d3")}
        kept = [issue(store, authority, "kept").serial]
        crl = make_crl(store)
        crl.publish()
        consumer = await start_consumer(stopped_consumers, redis, store, crl)
        with database_unavailable(db_url, postgres):
            *_, last = send_at_once(redis, [remove_thing("d1"), remove_group("g", ["d2", "d3"])])
            await async_wait_until(lambda: consumer.status.failed >= 2, what="failed attempts")
            pending, delivered = group_state(redis)
            assert (pending, delivered) == (2, last)  # read, not acknowledged
            assert consumer.status.handled == 0
        await async_wait_until(lambda: all_acknowledged(redis, last), what="all acknowledged")
        check_outcome(store, crl_path, list(serials.values()), kept)
        assert consumer.status.handled == 2
    finally:
        for _task, stop in stopped_consumers:
            stop.set()
        for task, _stop in stopped_consumers:
            await asyncio.wait_for(task, timeout=15)
        stopped_consumers.clear()
        store.engine.dispose()


# --------------------------------------------------------- real processes


@pytest.fixture
def spawn_runner(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """`python -m tests.scheduler.events_runner` processes, killed at the end if still up."""
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        index = len(started)
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.scheduler.events_runner", *args], cwd=REPO_ROOT,
            env=env, text=True, stdout=subprocess.PIPE,
            stderr=(tmp_path / f"runner-{index}.err").open("w"))
        process.index = index  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def read_line(process: subprocess.Popen[str], prefix: str, timeout: float = WAIT) -> str:
    """The next stdout line of ``process`` that starts with ``prefix``."""
    found: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    assert found, f"no {prefix!r} line from the runner (exit {process.poll()})"
    return found[0]


def handled_ids(tmp_path: Path, process: subprocess.Popen[str]) -> list[str]:
    """Entry ids that the runner logged as applied."""
    index = process.index  # type: ignore[attr-defined]
    ids = []
    for line in (tmp_path / f"runner-{index}.err").read_text().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg") == "platform event":
                ids.append(record["id"])
    return ids


@pytest.mark.parametrize("pause", ["before", "after"])
def test_sigkill_between_reading_and_acknowledging_loses_nothing_applies_nothing_twice(
    pause: str, postgres_url: str, redis: RedisServer, make_store: Callable[[str], Store],
    authority: CertificateAuthority, scheduler_env: Callable[..., dict[str, str]],
    spawn_runner: Callable[..., subprocess.Popen[str]], crl_path: Path, tmp_path: Path,
) -> None:
    store = make_store(postgres_url)
    things = [f"k-{i:02d}" for i in range(12)]
    serials = {t: [issue(store, authority, t).serial for _ in range(2)] for t in things}
    kept = [issue(store, authority, "kept").serial]
    env = scheduler_env(postgres_url, MF_CERTS_ES_URL=redis.url)

    first = spawn_runner(env, "--pause", pause, "--pause-at", "5", "--claim-idle", "1")
    read_line(first, "CONSUMER")
    wait_until(lambda: group_exists(redis), what="group")
    ids = send_at_once(redis, [*map(remove_thing, things[:6]), remove_group("g", things[6:])])
    read_line(first, "PAUSED")
    committed_before_kill = revocation_seq(store)
    first.kill()
    first.wait()
    assert committed_before_kill == (8 if pause == "before" else 10)
    pending, _ = group_state(redis)
    assert pending == len(ids)  # one batch read, nothing acknowledged

    second = spawn_runner(env, "--claim-idle", "1")
    read_line(second, "CONSUMER")
    wait_until(lambda: all_acknowledged(redis, ids[-1]), what="all acknowledged")
    all_serials = [s for t in things for s in serials[t]]
    wait_until(lambda: int(all_serials[-1], 16) in crl_reasons(crl_path) and
               set(crl_reasons(crl_path)) >= {int(s, 16) for s in all_serials}, what="CRL")
    check_outcome(store, crl_path, all_serials, kept)
    assert sorted(handled_ids(tmp_path, second)) == sorted(ids)  # it took over every event
    second.terminate()
    assert second.wait(timeout=20) == 0


def test_two_consumer_processes_handle_each_event_once(
    postgres_url: str, redis: RedisServer, make_store: Callable[[str], Store],
    authority: CertificateAuthority, scheduler_env: Callable[..., dict[str, str]],
    spawn_runner: Callable[..., subprocess.Popen[str]], crl_path: Path, tmp_path: Path,
) -> None:
    store = make_store(postgres_url)
    things = [f"p-{i:03d}" for i in range(60)]
    serials = {t: issue(store, authority, t).serial for t in things}
    kept = [issue(store, authority, "kept").serial]
    env = scheduler_env(postgres_url, MF_CERTS_ES_URL=redis.url)
    runners = [spawn_runner(env, "--claim-idle", "30") for _ in range(2)]
    for runner in runners:
        read_line(runner, "CONSUMER")
    wait_until(lambda: group_exists(redis), what="group")
    time.sleep(1.0)  # both blocked on the stream
    ids = []
    for thing in things:
        ids.append(send(redis, remove_thing(thing)))
        time.sleep(0.01)
    wait_until(lambda: all_acknowledged(redis, ids[-1]), what="all acknowledged")
    for runner in runners:
        runner.terminate()
        assert runner.wait(timeout=20) == 0
    by_runner = [handled_ids(tmp_path, runner) for runner in runners]
    assert all(by_runner), "both consumers took part"
    assert Counter(by_runner[0] + by_runner[1]) == Counter(ids)  # each exactly once
    check_outcome(store, crl_path, list(serials.values()), kept)


def test_scheduler_process_consumes_events_and_outlives_redis_down(
    sqlite_url: str, redis: RedisServer, make_store: Callable[[str], Store],
    authority: CertificateAuthority, scheduler_env: Callable[..., dict[str, str]],
    crl_path: Path, tmp_path: Path,
) -> None:
    store = make_store(sqlite_url)
    removed = [issue(store, authority, "gone").serial for _ in range(2)]
    kept = [issue(store, authority, "kept").serial]
    port = free_port()
    env = scheduler_env(sqlite_url, MF_CERTS_ES_URL=redis.url, MF_BROKER_URL="nats://127.0.0.1:1")
    err = tmp_path / "scheduler.err"
    redis.stop()
    process = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "--metrics-port", str(port)], cwd=REPO_ROOT,
        env=env, stdout=subprocess.DEVNULL, stderr=err.open("w"))
    try:
        wait_for_port(port, WAIT, process=process, output=err.read_text)
        assert "certs_platform_events_connected 0.0" in scrape(port)
        time.sleep(1.0)
        assert process.poll() is None, err.read_text()  # Redis down does not stop it
        redis.start()
        wait_until(lambda: group_exists(redis), what="group created by the scheduler")
        last = send(redis, remove_thing("gone"))
        wait_until(lambda: all_acknowledged(redis, last), what="event acknowledged")
        wait_until(lambda: {int(s, 16) for s in removed} <= set(crl_reasons(crl_path)),
                   what="CRL")
        check_outcome(store, crl_path, removed, kept)
        metrics = scrape(port)
        assert "certs_platform_events_handled_total 1.0" in metrics
        assert "certs_platform_events_connected 1.0" in metrics
        assert "certs_platform_event_revocations_total 2.0" in metrics
    finally:
        process.terminate()
        code = process.wait(timeout=30)
    assert code == 0, err.read_text()[-3000:]


async def test_group_health_reports_pending_and_redis_down(
    redis: RedisServer, store: Store, authority: CertificateAuthority,
    make_crl: Callable[..., CrlPublisher],
    stopped_consumers: list[tuple[asyncio.Task[None], asyncio.Event]],
) -> None:
    assert (await group_health(redis.url))["status"] == "warn"  # no stream yet
    serial = issue(store, authority, "h1").serial
    await start_consumer(stopped_consumers, redis, store, make_crl(store))
    last = send(redis, remove_thing("h1"))
    await async_wait_until(lambda: all_acknowledged(redis, last), what="acknowledged")
    assert await group_health(redis.url) == {"status": "pass", "pending": 0, "lag": 0}
    with pytest.raises(NotFound):
        store.get(serial)
    redis.stop()
    try:
        down = await group_health(redis.url)
        assert down["status"] == "warn" and "redis unavailable" in down["output"]
        assert str(redis.port) not in down["output"]
    finally:
        redis.start()


async def test_idle_consumers_without_pending_entries_are_forgotten(
    redis: RedisServer, store: Store, make_crl: Callable[..., CrlPublisher],
    stopped_consumers: list[tuple[asyncio.Task[None], asyncio.Event]],
) -> None:
    with client(redis) as r:
        r.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
        r.xgroup_createconsumer(STREAM, GROUP, "old")
        r.xadd(STREAM, {"operation": "thing.create", "id": "x"})
        r.xreadgroup(GROUP, "busy", {STREAM: ">"})

    def names() -> set[str]:
        with client(redis) as r:
            consumers: Any = r.xinfo_consumers(STREAM, GROUP)
        return {info["name"] for info in consumers}

    await asyncio.sleep(0.6)
    consumer = await start_consumer(stopped_consumers, redis, store, make_crl(store),
                                    prune_idle=0.5, claim_idle=60, claim_interval=0.2)
    await async_wait_until(lambda: names() == {"busy", consumer.consumer}, what="pruned")
    assert group_state(redis)[0] == 1  # busy's entry is still pending (not idle for 60 s)
