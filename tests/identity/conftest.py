"""Fixtures of the identity tests (the provider itself comes from tests.fixtures.identity)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from authority.identity import AuthClient, ThingsClient
from tests.fixtures.identity import IdentityFixture

from .fake import FakeIdentityServer


@pytest.fixture
async def things(identity: IdentityFixture) -> AsyncIterator[ThingsClient]:
    async with ThingsClient(identity.things_url, timeout=1.0) as client:
        yield client


@pytest.fixture
async def auth(identity: IdentityFixture) -> AsyncIterator[AuthClient]:
    async with AuthClient(identity.auth_url, timeout=1.0) as client:
        yield client


@pytest.fixture(scope="session")
async def fake_server() -> AsyncIterator[FakeIdentityServer]:
    server = FakeIdentityServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def fake(fake_server: FakeIdentityServer) -> FakeIdentityServer:
    fake_server.reset()
    return fake_server
