"""One real ``certs serve`` process (its own SoftHSM2 token, SQLite, the suite's gRPC identity
provider) for the SDK and CLI tests of a session, and SDK clients on it.

Fixtures:

- `served` (session): the running service (tests.fixtures.serve.Served).
- `base_url` (session): its URL.
- `ca_pem` (session): the CA certificate it signs with (read from its state directory, not
  over the API), for verification with openssl and pyca/cryptography.
- `client` (function): a CertsClient with alice's token; `async_client` the async twin.
- `identity_outage` (function): `identity_outage(seconds)` stops the identity provider now and
  starts it again on the same ports after `seconds`, in a thread; joined after the test.
"""

import time
from collections.abc import AsyncIterator, Callable, Iterator
from threading import Thread

import pytest
from certs_sdk import AsyncCertsClient, CertsClient, RetryPolicy

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve

# Quick retries, so the tests that do not exercise them stay short.
FAST_RETRY = RetryPolicy(attempts=3, initial=0.05, maximum=0.2)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, identity: IdentityFixture
           ) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("sdk-serve")
    env = serve_env(tmp_path, identity, workers=1,
                    extra={"MF_THINGS_GRPC_TIMEOUT": "2s", "MF_AUTH_GRPC_TIMEOUT": "2s"})
    service = start_serve(env, tmp_path)
    try:
        yield service
    finally:
        stop_serve(service.process)


@pytest.fixture(scope="session")
def base_url(served: Served) -> str:
    return f"http://127.0.0.1:{served.port}"


@pytest.fixture(scope="session")
def ca_pem(served: Served) -> str:
    return served.signing_ca.read_text()


@pytest.fixture
def client(base_url: str, identity: IdentityFixture) -> Iterator[CertsClient]:
    with CertsClient(base_url, identity.alice.token, timeout=30, retry=FAST_RETRY) as sdk:
        yield sdk


@pytest.fixture
async def async_client(base_url: str, identity: IdentityFixture
                       ) -> AsyncIterator[AsyncCertsClient]:
    async with AsyncCertsClient(base_url, identity.alice.token, timeout=30,
                                retry=FAST_RETRY) as sdk:
        yield sdk


@pytest.fixture
def identity_outage(identity: IdentityFixture) -> Iterator[Callable[[float], None]]:
    threads: list[Thread] = []

    def outage(seconds: float) -> None:
        identity.stop()
        def back() -> None:
            time.sleep(seconds)
            identity.start()

        timer = Thread(target=back, name="identity-back", daemon=True)
        timer.start()
        threads.append(timer)

    try:
        yield outage
    finally:
        for thread in threads:
            thread.join(timeout=60)
        if not identity.running:
            identity.start()
