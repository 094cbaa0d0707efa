"""A real ``certs serve`` (SQLite, two workers) with ``MF_CERTS_OCSP_URL`` pointing at its own
``/ocsp``, shared by the tests of a module, and files the openssl clients read."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve


@dataclass
class OcspSetup:
    served: Served
    env: dict[str, str]
    folder: Path
    ca: Path  # the CA chain as the service serves it (GET /ca.pem)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.served.port}"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory,
            identity: IdentityFixture) -> Iterator[OcspSetup]:
    folder = tmp_path_factory.mktemp("ocsp")
    port = free_port()
    env = serve_env(folder, identity, workers=2, extra={
        "MF_CERTS_HTTP_PORT": str(port),
        "MF_CERTS_OCSP_URL": f"http://127.0.0.1:{port}/ocsp",
    })
    served = start_serve(env, folder)
    try:
        ca = folder / "ca.pem"
        ca.write_bytes(httpx.get(f"http://127.0.0.1:{port}/ca.pem", timeout=30).content)
        yield OcspSetup(served, env, folder, ca)
    finally:
        stop_serve(served.process)
