"""Reads awaited on the event loop (PostgreSQL): the same records and pages as the sync path,
NotFound, Unavailable when the database is down, and a dropped connection survived."""

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from repository import NotFound, Store, Unavailable, create_engine_for, migrate
from tests.repository.helpers import SoftwareSealer, make_cert

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def pg_store(postgres_url: str):
    migrate(postgres_url)
    engine = create_engine_for(postgres_url)
    store = Store(engine, SoftwareSealer())
    yield store
    asyncio.run(store.close_reads())
    engine.dispose()


def test_only_postgres_reads_on_the_loop(sqlite_url: str, pg_store: Store) -> None:
    migrate(sqlite_url)
    assert not Store(create_engine_for(sqlite_url), SoftwareSealer()).reads_on_loop
    assert pg_store.reads_on_loop


def test_records_and_pages_are_those_of_the_sync_path(pg_store: Store) -> None:
    store = pg_store
    saved = [store.save(make_cert("looped", expires_at=NOW + timedelta(days=10 + i // 2)))
             for i in range(9)]
    store.save(make_cert("other"))
    store.revoke(saved[3].serial)
    fragment = saved[5].serial[2:4]
    queries = [{}, {"serial": fragment}, {"serial": "%_"},
               {"expires_from": NOW + timedelta(days=11), "expires_to": NOW + timedelta(days=13)}]

    async def compare() -> int:
        compared = 0
        for cert in saved[:3] + saved[4:]:
            assert await store.get_async(cert.serial.upper()) == store.get(cert.serial)
            compared += 1
        for query in queries:
            for offset, limit in ((0, 10), (0, 0), (2, 3), (7, 5), (20, 5)):
                looped = await store.list_by_thing_async("looped", offset=offset, limit=limit,
                                                         **query)
                assert looped == store.list_by_thing("looped", offset=offset, limit=limit,
                                                     **query), (query, offset, limit)
                serials = await store.list_serials_async("looped", offset=offset,
                                                         limit=limit, **query)
                assert serials == store.list_serials("looped", offset=offset, limit=limit,
                                                     **query), (query, offset, limit)
                assert [entry.serial for entry in serials.items] == [
                    cert.serial for cert in looped.items]
                compared += 1
        return compared

    assert asyncio.run(compare()) == 8 + len(queries) * 5
    # a second event loop gets connections of its own
    assert asyncio.run(store.get_async(saved[0].serial)).serial == saved[0].serial
    page = asyncio.run(store.list_by_thing_async("looped", limit=100))
    assert page.total == 8 and len(page.items) == 8
    assert all(item.private_key_pem is None for item in page.items)
    assert page.items[0].expires_at.tzinfo is UTC
    assert asyncio.run(store.list_serials_async("looped")).items[0].expires_at.tzinfo is UTC


def test_revoked_and_unknown_serials_are_not_found(pg_store: Store) -> None:
    cert = pg_store.save(make_cert())
    pg_store.revoke(cert.serial)
    for serial in (cert.serial, "abcdef", "not hex"):
        with pytest.raises(NotFound):
            asyncio.run(pg_store.get_async(serial))


def test_a_dropped_connection_is_replaced(pg_store: Store, postgres_url: str) -> None:
    cert = pg_store.save(make_cert())

    async def read_kill_read() -> str:
        await pg_store.get_async(cert.serial)
        dsn = postgres_url.replace("postgresql+psycopg", "postgresql")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            killed = await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'certs' AND pid <> pg_backend_pid()")
            assert (await killed.fetchone()) >= (1,)
        return (await pg_store.get_async(cert.serial)).serial

    assert asyncio.run(read_kill_read()) == cert.serial


def test_a_database_that_is_down_is_unavailable_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = Store(create_engine_for(f"postgresql+psycopg://postgres@127.0.0.1:{port}/certs"),
                  SoftwareSealer())
    started = time.monotonic()
    with pytest.raises(Unavailable):
        asyncio.run(store.get_async("abcdef"))
    with pytest.raises(Unavailable):
        asyncio.run(store.list_by_thing_async("thing-1"))
    assert time.monotonic() - started < 3


def test_reads_share_few_connections_by_waiting_for_one(postgres_url: str) -> None:
    migrate(postgres_url)
    store = Store(create_engine_for(postgres_url, pool_size=1, max_overflow=0,
                                    pool_timeout=0.3), SoftwareSealer())
    cert = store.save(make_cert())

    async def many_at_once() -> list[object]:
        return await asyncio.gather(*(store.get_async(cert.serial) for _ in range(20)),
                                    return_exceptions=True)

    answers = asyncio.run(many_at_once())
    assert [getattr(answer, "serial", answer) for answer in answers] == [cert.serial] * 20
