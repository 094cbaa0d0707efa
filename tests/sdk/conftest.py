"""One real ``certs serve`` process (its own SoftHSM2 token, SQLite, the suite's gRPC identity
provider) for the SDK and CLI tests of a session, and SDK clients on it.

Fixtures:

- `served` (session): the running service (tests.fixtures.serve.Served).
- `base_url` (session): its URL.
- `ca_pem` (session): the CA certificate it signs with (read from its state directory, not
  over the API), for verification with openssl and pyca/cryptography.
- `client` (function): a CertsClient with alice's token; `async_client` the async twin.
- `identity_down` (function): the provider stopped during the test; afterwards it is started
  again and the fixture waits until the service has reconnected to it.
- `identity_outage` (function): `identity_outage(seconds)` stops the identity provider now and
  starts it again on the same ports after `seconds`, in a thread; joined after the test,
  then the service's reconnection is awaited as for `identity_down`.
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
    # 5 s identity deadlines, as tests/http: a fresh gRPC channel on a loaded two-core machine
    # has taken longer than the default 1 s.
    env = serve_env(tmp_path, identity, workers=1,
                    extra={"MF_THINGS_GRPC_TIMEOUT": "5s", "MF_AUTH_GRPC_TIMEOUT": "5s"})
    service = start_serve(env, tmp_path)
    try:
        # The first identity call opens the service's channel; make it before any test.
        warm = RetryPolicy(attempts=10, initial=0.5, maximum=2.0)
        with CertsClient(f"http://127.0.0.1:{service.port}", identity.alice.token,
                         timeout=30, retry=warm) as sdk:
            sdk.list_serials(identity.thing_a1.id)
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


def wait_for_identity(base_url: str, identity: IdentityFixture) -> float:
    """Seconds until the service answers a user route again after the provider came back (its
    gRPC channel reconnects with a backoff of its own), so the next test starts clean."""
    started = time.monotonic()
    patient = RetryPolicy(attempts=40, initial=0.2, factor=1.5, maximum=1.0)
    with CertsClient(base_url, identity.alice.token, timeout=30, retry=patient) as sdk:
        sdk.list_serials(identity.thing_a1.id)
    return time.monotonic() - started


@pytest.fixture
def identity_down(identity: IdentityFixture, base_url: str) -> Iterator[IdentityFixture]:
    """The provider stopped for the test (overrides the suite's fixture of the same name, to
    wait afterwards until this service has reconnected)."""
    identity.stop()
    try:
        yield identity
    finally:
        identity.start()
        wait_for_identity(base_url, identity)


@pytest.fixture
def identity_outage(identity: IdentityFixture, base_url: str
                    ) -> Iterator[Callable[[float], None]]:
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
        wait_for_identity(base_url, identity)
