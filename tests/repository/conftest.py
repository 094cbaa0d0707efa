"""Fixtures of the store tests: a migrated database on each backend and a Store on it."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from repository import KeySealer, Store, create_engine_for, migrate
from tests.repository.helpers import SoftwareSealer


@pytest.fixture
def key_sealer(request: pytest.FixtureRequest) -> KeySealer:
    """The HSM's sealer when the hsm fixtures provide one, else AES-GCM in software."""
    try:
        sealer: KeySealer = request.getfixturevalue("sealer")
    except pytest.FixtureLookupError:
        return SoftwareSealer()
    return sealer


class Clock:
    """A settable clock for the store (leases and expiry without sleeping)."""

    def __init__(self) -> None:
        self.offset_seconds = 0.0

    def __call__(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def migrated_url(db_url: str) -> str:
    migrate(db_url)
    return db_url


@pytest.fixture
def make_store(
    migrated_url: str, key_sealer: KeySealer, clock: Clock
) -> Iterator[Callable[..., Store]]:
    """Build stores on the test database; their engines are disposed after the test."""
    engines = []

    def make(**engine_options: object) -> Store:
        engine = create_engine_for(migrated_url, **engine_options)  # type: ignore[arg-type]
        engines.append(engine)
        return Store(engine, key_sealer, clock=clock)

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()
