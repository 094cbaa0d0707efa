"""A database that is down, busy or drops connections gives Unavailable or a right answer."""

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from repository import Store, Unavailable, create_engine_for, migrate
from tests.fixtures.postgres import PostgresCluster
from tests.repository.helpers import SoftwareSealer, make_cert


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_postgres_down_is_unavailable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/certs"
    engine = create_engine_for(url, connect_timeout=2)
    store = Store(engine, SoftwareSealer())
    started = time.monotonic()
    with pytest.raises(Unavailable):
        store.ping()
    with pytest.raises(Unavailable):
        store.get("abcdef")
    with pytest.raises(Unavailable):
        store.save(make_cert())
    assert time.monotonic() - started < 10
    engine.dispose()


def test_sqlite_that_cannot_open_is_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'certs.db'}"
    store = Store(create_engine_for(url), SoftwareSealer())
    with pytest.raises(Unavailable):
        store.get("abcdef")


def test_exhausted_pool_is_unavailable(make_store: Callable[..., Store]) -> None:
    store = make_store(pool_size=1, max_overflow=0, pool_timeout=0.3)
    store.save(make_cert())
    held = store.engine.connect()
    try:
        with pytest.raises(Unavailable):
            store.ping()
    finally:
        held.close()
    store.ping()


def test_sqlite_writer_locked_out_is_unavailable_then_recovers(sqlite_url: str) -> None:
    migrate(sqlite_url)
    store = Store(create_engine_for(sqlite_url, busy_timeout_ms=200), SoftwareSealer())
    blocker = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable):
            store.save(make_cert())
        assert store.list_by_thing("thing-1").total == 0  # readers are not blocked in WAL mode
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    saved = store.save(make_cert())
    assert store.get(saved.serial).serial == saved.serial
    store.engine.dispose()


def _terminate_backends(cluster: PostgresCluster, database: str) -> int:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("pre_ping", [True, False], ids=["pre-ping", "retry"])
def test_lost_connections_are_replaced(
    postgres_server: PostgresCluster, postgres_url: str, pre_ping: bool
) -> None:
    """Server-side kills of pooled connections: the next operations still answer correctly.

    Without pre-ping the first statement fails on the dead connection and the operation is
    retried once on a new one.
    """
    migrate(postgres_url)
    engine = create_engine_for(postgres_url, pool_size=2, pool_pre_ping=pre_ping)
    store = Store(engine, SoftwareSealer())
    cert = store.save(make_cert())
    assert _terminate_backends(postgres_server, make_url(postgres_url).database or "") >= 1
    assert store.get(cert.serial).serial == cert.serial
    second = store.save(make_cert())
    assert _terminate_backends(postgres_server, make_url(postgres_url).database or "") >= 1
    revocation = store.revoke(second.serial)
    assert revocation.seq == 1
    assert [e.serial for e in store.crl_entries()] == [second.serial]
    engine.dispose()


def test_postgres_lock_wait_times_out_as_unavailable(
    postgres_server: PostgresCluster, postgres_url: str
) -> None:
    migrate(postgres_url)
    engine = create_engine_for(postgres_url, lock_timeout_ms=200)
    store = Store(engine, SoftwareSealer())
    cert = store.save(make_cert("thing-l"))
    database = make_url(postgres_url).database or ""
    with psycopg.connect(postgres_server.dsn(database)) as holder:
        holder.execute("SELECT 1 FROM certs WHERE serial = %s FOR UPDATE", (cert.serial,))
        started = time.monotonic()
        with pytest.raises(Unavailable):
            store.mark_downloaded(cert.serial, "thing-l")
        assert time.monotonic() - started < 5
        assert store.get(cert.serial).serial == cert.serial  # reads are not blocked
        holder.rollback()
    assert store.mark_downloaded(cert.serial, "thing-l").downloaded is True
    engine.dispose()
