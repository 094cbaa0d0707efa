"""Single-statement reads awaited on the event loop (PostgreSQL, psycopg's async connections).

A read through the sync engine runs in a worker thread: the hop there and back (two wake-ups
and their context switches) costs more CPU than the query. Here the same SQLAlchemy statement,
compiled once for the engine's dialect, is sent on an asyncio connection of psycopg in
autocommit, with SQLAlchemy's own bind and result processing, so a row is what the sync path
reads.

The connections are a small LIFO pool of this module's own, opened on demand, because a read
must fail at once when the database refuses connections (a 503, as on the sync path), where a
pool that reconnects in the background makes each waiting read wait out its timeout. A
connection that fails is closed; the read is tried once more on a new one (one statement in
autocommit: nothing was written).
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from sqlalchemy import Engine
from sqlalchemy.sql import Select

from repository import compiled
from repository.compiled import Prepared, Row
from repository.errors import Unavailable

_RECYCLE_SECONDS = 1800.0  # as the sync engine's pool_recycle
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)
_connect_args: "WeakKeyDictionary[Engine, dict[str, Any]]" = WeakKeyDictionary()

# Opens a context around each read (the tracing span of a database call, given from above).
Observer = Callable[[], contextlib.AbstractContextManager[Any]]


def remember_connect_args(engine: Engine, connect_args: Mapping[str, Any]) -> None:
    """Keep the driver arguments an engine was made with, for connections made beside it."""
    _connect_args[engine] = dict(connect_args)


def connect_kwargs(engine: Engine) -> dict[str, Any]:
    """psycopg.connect keyword arguments for the database of a ``postgresql+psycopg`` engine."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs = {name: value for name, value in kwargs.items() if name != "context"}
    kwargs.update(_connect_args.get(engine, {}))
    return kwargs


def prepare(statement: Select[Any], engine: Engine) -> Prepared:
    """``statement`` compiled for ``engine``'s dialect, with the processors of its parameters
    and of its result columns."""
    return compiled.prepare(statement, engine.dialect,
                            [column.type for column in statement.selected_columns])


class LoopReads:
    """Reads on the running event loop, on as many connections of its own as the engine's
    pool may open, waiting for one as long as the engine's pool would."""

    def __init__(self, engine: Engine) -> None:
        self._kwargs = {**connect_kwargs(engine), "autocommit": True}
        pool = engine.pool
        self._size = pool.size() + getattr(pool, "_max_overflow", 0)  # type: ignore[attr-defined]
        self._wait: float = getattr(pool, "_timeout", 5.0)
        self._observe: Observer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore  # made by _follow_loop, for the loop that reads
        self._idle: list[tuple[psycopg.AsyncConnection[Any], float]] = []

    def observe(self, observer: Observer) -> None:
        self._observe = observer

    async def rows(self, statement: Prepared, given: Mapping[str, Any]) -> list[Row]:
        """Every row of ``statement`` with the parameters ``given``; Unavailable when the
        database cannot answer."""
        params = statement.parameters(given)
        with self._observe() if self._observe else contextlib.nullcontext():
            try:
                raw = await self._fetch(statement.sql, params)
            except _TRANSIENT:
                try:
                    raw = await self._fetch(statement.sql, params)
                except _TRANSIENT as exc:
                    raise Unavailable(f"database unavailable ({type(exc).__name__})") from exc
        return [statement.row(found) for found in raw]

    async def _fetch(self, sql: str, params: dict[str, Any]) -> list[Any]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self._follow_loop()
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._wait):
                    await self._slots.acquire()
            except TimeoutError:
                raise Unavailable("no free database connection in time") from None
        else:
            await self._slots.acquire()
        try:
            conn, opened = await self._take()
            try:
                yield conn
            except BaseException:
                await conn.close()
                raise
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._idle.append((conn, opened))
            else:
                await conn.close()
        finally:
            self._slots.release()

    async def _take(self) -> tuple[psycopg.AsyncConnection[Any], float]:
        now = time.monotonic()
        while self._idle:
            conn, opened = self._idle.pop()
            if now - opened < _RECYCLE_SECONDS and not conn.closed:
                return conn, opened
            await conn.close()
        return await psycopg.AsyncConnection.connect(**self._kwargs), now

    def _follow_loop(self) -> None:
        """Connections belong to the loop that opened them: a new loop starts afresh."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        self._drop_idle()
        self._loop, self._slots = loop, asyncio.Semaphore(self._size)

    def _drop_idle(self) -> None:
        for conn, _ in self._idle:
            conn.pgconn.finish()
        self._idle.clear()

    async def close(self) -> None:
        """Close the idle connections (at shutdown)."""
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()
