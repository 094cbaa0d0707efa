"""One transaction per operation, with driver errors turned into the package's typed errors.

A lost connection, a lock or busy timeout, a deadlock or a serialization failure before COMMIT
means the transaction did not happen, so the whole operation is retried once on a fresh
connection. A failure during COMMIT leaves the outcome unknown: it is reported as Unavailable
and never retried, because a retry could give a wrong answer (NotFound for a revocation that
did commit, Conflict for a certificate that was saved).
"""

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from repository.engine import WRITE_OPTION, configure_sqlite
from repository.errors import Conflict, RepositoryError, Unavailable

T = TypeVar("T")

_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)


class _Transient(Exception):
    """Internal: the attempt failed before COMMIT for a reason worth one retry."""


class Transactions:
    """Runs a unit of work in one transaction on a pooled connection.

    Reads on PostgreSQL run in autocommit: each is one statement (or, for a page, two that
    need no common snapshot), and skipping BEGIN/COMMIT saves two round trips per call.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._autocommit_reads = self.dialect == "postgresql"
        configure_sqlite(engine)

    def read(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, write=False)

    def write(self, work: Callable[[Connection], T]) -> T:
        return self._run(work, write=True)

    def _run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        try:
            return self._attempt(work, write)
        except _Transient:
            pass
        try:
            return self._attempt(work, write)
        except _Transient as exc:
            cause = exc.__cause__
            raise Unavailable(f"database unavailable ({type(cause).__name__})") from cause

    def _attempt(self, work: Callable[[Connection], T], write: bool) -> T:
        try:
            conn = self.engine.connect()
        except sa_exc.TimeoutError as exc:
            raise Unavailable("no free database connection in time") from exc
        except _TRANSIENT as exc:
            raise _Transient() from exc
        with conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            elif self._autocommit_reads:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                transaction = conn.begin()
                result = work(conn)
            except RepositoryError:
                _rollback(conn)
                raise
            except sa_exc.IntegrityError as exc:
                _rollback(conn)
                raise Conflict(_short(exc)) from exc
            except _TRANSIENT as exc:
                _rollback(conn)
                raise _Transient() from exc
            except BaseException:
                _rollback(conn)
                raise
            try:
                transaction.commit()
            except sa_exc.IntegrityError as exc:
                raise Conflict(_short(exc)) from exc
            except _TRANSIENT as exc:
                raise Unavailable("database failed during commit; outcome unknown") from exc
            return result


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except sa_exc.DBAPIError:
        conn.invalidate()


def _short(exc: sa_exc.DBAPIError) -> str:
    """The driver's first message line, without the SQL text and parameters."""
    return str(exc.orig).splitlines()[0] if exc.orig is not None else type(exc).__name__
