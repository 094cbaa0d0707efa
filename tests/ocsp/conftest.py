"""A real ``certs serve`` (SQLite, two workers) with ``MF_CERTS_OCSP_URL`` pointing at its own
``/ocsp``, shared by the tests of a module, and files the openssl clients read. Each module
runs a second time against uvicorn serving the app with the OCSP front of
``server.http.ocsp_asgi`` (one process, the same settings), until ``certs serve`` runs it."""

import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port, wait_for_port
from tests.fixtures.serve import (
    ROOT,
    START_TIMEOUT,
    Served,
    serve_env,
    start_serve,
    stop_serve,
)

FRONT = "server.http.ocsp_asgi:create_app"


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


def start_front(env: dict[str, str], folder: Path) -> Served:
    """What ``certs serve`` runs, by hand: the migration, then uvicorn serving the app with the
    OCSP front (as one worker) and the scheduler, in one process group."""
    log = folder / "front.log"
    port = int(env["MF_CERTS_HTTP_PORT"])
    migrated = subprocess.run([sys.executable, "-m", "server.cli", "migrate"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    python = shlex.quote(sys.executable)
    command = (f"{python} -m scheduler & exec {python} -m uvicorn {FRONT} --factory "
               f"--host 127.0.0.1 --port {port} --loop uvloop --http httptools --no-access-log")
    with log.open("wb") as output:
        process = subprocess.Popen(["sh", "-c", command], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(process, port, folder / "state", log)
    try:
        wait_for_port(port, START_TIMEOUT, process=process, output=served.output)
    except BaseException:
        stop_serve(process)
        raise
    return served


@pytest.fixture(scope="module", params=["certs serve", "ocsp front"])
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            identity: IdentityFixture) -> Iterator[OcspSetup]:
    folder = tmp_path_factory.mktemp("ocsp")
    port = free_port()
    env = serve_env(folder, identity, workers=2, extra={
        "MF_CERTS_HTTP_PORT": str(port),
        "MF_CERTS_OCSP_URL": f"http://127.0.0.1:{port}/ocsp",
    })
    served = start_serve(env, folder) if request.param == "certs serve" else start_front(
        env, folder)
    try:
        ca = folder / "ca.pem"
        ca.write_bytes(httpx.get(f"http://127.0.0.1:{port}/ca.pem", timeout=30).content)
        yield OcspSetup(served, env, folder, ca)
    finally:
        stop_serve(served.process)
