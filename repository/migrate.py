"""Run the Alembic migrations programmatically (no alembic.ini), one transaction per call."""

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import Connection

from repository.engine import WRITE_OPTION, create_engine_for
from repository.schema import certs

HEAD = "0007"
_SCRIPTS = Path(__file__).resolve().parent / "migrations"
# Any constant: replicas starting together take turns instead of racing on alembic_version.
_ADVISORY_LOCK = 0x6365727473


def migrate(url: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (or behind an engine) to ``revision``."""
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | Engine, revision: str) -> None:
    """Downgrade to ``revision``; ``"base"`` removes every table the migrations own."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: str | Engine) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    engine, owned = _engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def plaintext_key_count(url: str | Engine) -> int:
    """How many rows imported from the Go service still hold a plaintext client key."""
    engine, owned = _engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(certs).where(certs.c.client_key.is_not(None))
            ).scalar_one())
    finally:
        if owned:
            engine.dispose()


def _engine(url: str | Engine) -> tuple[Engine, bool]:
    if isinstance(url, Engine):
        return url, False
    # No statement timeout: rebuilding a large imported table may take a while.
    return create_engine_for(url, pool_size=1, max_overflow=0, statement_timeout_ms=0,
                             lock_timeout_ms=0), True


def _run(url: str | Engine, action: Callable[[Config], None]) -> None:
    engine, owned = _engine(url)
    try:
        with engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
                action(_config(conn))
    finally:
        if owned:
            engine.dispose()


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = conn
    return config
