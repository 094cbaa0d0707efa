"""Engines with the settings the store relies on (pool, timeouts, SQLite pragmas and locking)."""

import sqlite3
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from repository import loop_reads

# Execution option that makes a SQLite transaction take the write lock at BEGIN, so two writers
# queue on busy_timeout instead of failing half way when a reader upgrades to a writer.
WRITE_OPTION = "certs_write"

_configured: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def create_engine_for(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: int = 5,
    busy_timeout_ms: int = 5000,
    statement_timeout_ms: int = 30000,
    lock_timeout_ms: int = 10000,
    pool_pre_ping: bool = False,
    echo: bool = False,
) -> Engine:
    """An engine for ``postgresql+psycopg://...`` or ``sqlite:///path`` (``sqlite://`` in memory).

    PostgreSQL: bounded pool, connect timeout, statement and lock timeouts (0 turns one off),
    session time zone UTC. No pre-ping by default: a dead pooled connection fails on its first
    statement, SQLAlchemy then discards every connection of that generation, and the store
    retries the operation once on a fresh one (a round trip saved on every call). SQLite: WAL,
    busy timeout, foreign keys, and write transactions that begin IMMEDIATE. ``sqlite://`` (in
    memory) shares one connection: single thread only.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if parsed.get_driver_name() != "psycopg" or backend == "postgres":
            parsed = parsed.set(drivername="postgresql+psycopg")
        options = (f"-c TimeZone=UTC -c statement_timeout={int(statement_timeout_ms)}"
                   f" -c lock_timeout={int(lock_timeout_ms)}")
        connect_args = {"connect_timeout": connect_timeout, "options": options,
                        "application_name": "certs"}
        engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            pool_pre_ping=pool_pre_ping,
            pool_recycle=1800,
            echo=echo,
            connect_args=connect_args,
        )
        loop_reads.remember_connect_args(engine, connect_args)
    elif backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {
            "echo": echo,
            "connect_args": {"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        }
        if in_memory:
            kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow,
                          pool_timeout=pool_timeout, pool_pre_ping=pool_pre_ping)
        engine = create_engine(parsed, **kwargs)
        configure_sqlite(engine, busy_timeout_ms=busy_timeout_ms, wal=not in_memory)
    else:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")
    return engine


def configure_sqlite(engine: Engine, *, busy_timeout_ms: int = 5000, wal: bool = True) -> None:
    """Install the SQLite connection settings and transaction handling once per engine."""
    if engine.dialect.name != "sqlite" or engine in _configured:
        return
    _configured.add(engine)
    engine.dispose()  # connections opened before the listeners existed would lack the settings

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred & late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
