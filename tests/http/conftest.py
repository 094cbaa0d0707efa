"""The real app over a real token, store and identity provider, driven in-process."""

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from hsm.authority import CertificateAuthority
from repository import migrate
from server.config import load_settings
from server.http.app import create_app
from server.wiring import Components, build


@pytest.fixture
async def components(
    db_url: str, authority: CertificateAuthority, identity, tmp_path: Path,
) -> AsyncIterator[Components]:
    migrate(db_url)
    settings = replace(load_settings({
        "MF_CERTS_DB_URL": db_url,
        "MF_THINGS_GRPC_URL": identity.things_url,
        "MF_AUTH_GRPC_URL": identity.auth_url,
        "MF_CERTS_CRL_PATH": str(tmp_path / "crl.pem"),
        "MF_CERTS_SIGN_CA_PATH": str(tmp_path / "unused"),
    }), hsm_pool_size=4)
    built = build(settings, authority)
    yield built
    await built.things.close()
    built.service.close()


@pytest.fixture
async def client(components: Components) -> AsyncIterator[AsyncTestClient]:
    app = create_app(components=components)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
def bearer(identity) -> Callable[[str], dict[str, str]]:
    def headers(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {identity.users[user].token}"}
    return headers
