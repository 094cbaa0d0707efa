"""One real ``certs serve`` (one worker, SQLite, SoftHSM2, the suite's identity provider), shared by
the API document tests of this folder."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve


@pytest.fixture(scope="package")
def served(identity: IdentityFixture, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Served]:
    tmp_path: Path = tmp_path_factory.mktemp("api")
    process = start_serve(serve_env(tmp_path, identity, workers=1), tmp_path)
    try:
        yield process
    finally:
        stop_serve(process.process)


@pytest.fixture(scope="package")
def base_url(served: Served) -> str:
    return f"http://127.0.0.1:{served.port}"


@pytest.fixture(scope="package")
def document(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
