"""Every error type of the SDK, provoked on the real service (or a real socket), with the
status and the exact SPEC message."""

from collections.abc import Iterator

import httpx
import pytest
from certs_sdk import (
    BadRequest,
    CertsClient,
    CertsError,
    ConnectionFailed,
    Forbidden,
    NotFound,
    RetryPolicy,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
    _calls,
)

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port

NO_RETRY = RetryPolicy.disabled()


def _raises(kind: type[CertsError], status: int | None, message: str) -> pytest.RaisesExc:
    return pytest.raises(kind, check=lambda e: (e.status, e.message) == (status, message))


@pytest.fixture
def mallory(base_url: str, identity: IdentityFixture) -> Iterator[CertsClient]:
    with CertsClient(base_url, identity.mallory.token, retry=NO_RETRY) as sdk:
        yield sdk


def test_bad_request(client: CertsClient, identity: IdentityFixture) -> None:
    thing = identity.thing_a1.id
    with _raises(BadRequest, 400, "unsupported key type"):
        client.issue(thing, key_type="dsa")
    with _raises(BadRequest, 400, "invalid key bits"):
        client.issue(thing, key_type="ec", key_bits=1000)
    with _raises(BadRequest, 400, "invalid ttl"):
        client.issue(thing, ttl="soon")
    with _raises(BadRequest, 400, "missing thing id"):
        client.issue("")
    with _raises(BadRequest, 400, "invalid limit size"):
        client.list_serials(thing, limit=201)
    young = client.issue(thing, key_type="ec", ttl="2000h")
    with _raises(BadRequest, 400, "certificate not eligible for renewal yet"):
        client.renew(young.serial)
    assert str(BadRequest("invalid ttl", status=400)) == "400 invalid ttl"


def test_unauthorized(base_url: str, client: CertsClient, identity: IdentityFixture) -> None:
    with CertsClient(base_url) as anonymous:
        with _raises(Unauthorized, 401, "missing or invalid bearer user token"):
            anonymous.list_serials(identity.thing_a1.id)
    with CertsClient(base_url, identity.unknown_token) as stranger:
        with _raises(Unauthorized, 401, "failed to perform authentication over the entity"):
            stranger.issue(identity.thing_a1.id)
    issued = client.issue(identity.thing_a1.id, key_type="ec")
    with _raises(Unauthorized, 401, "failed to perform authentication over the entity"):
        client.download(issued.serial, identity.unknown_key)
    with _raises(Unauthorized, 401, "invalid thing key type"):
        client.download(issued.serial, "")


def test_forbidden(client: CertsClient, mallory: CertsClient,
                   identity: IdentityFixture) -> None:
    issued = client.issue(identity.thing_a1.id, key_type="ec")
    with _raises(Forbidden, 403, "failed to perform authorization over the entity"):
        mallory.view(issued.serial)
    with _raises(Forbidden, 403, "failed to perform authorization over the entity"):
        client.rotate(issued.serial, identity.thing_a2.id)
    with _raises(Forbidden, 403, "failed to perform authorization over the entity"):
        client.download(issued.serial, identity.thing_b1.key)
    client.download(issued.serial, identity.thing_a1.key)
    with _raises(Forbidden, 403, "certificate already downloaded"):
        client.download(issued.serial, identity.thing_a1.key)


def test_not_found(client: CertsClient) -> None:
    with _raises(NotFound, 404, "entity not found"):
        client.view("abcdef0123")
    with _raises(NotFound, 404, "failed to revoke certificate"):
        client.revoke("abcdef0123")


def test_unsupported_media_type(base_url: str, identity: IdentityFixture) -> None:
    """The SDK always sends JSON; a request hook of the caller's own httpx client changes the
    content type, and the service's 415 arrives as UnsupportedMediaType."""

    def as_text(request: httpx.Request) -> None:
        request.headers["Content-Type"] = "text/plain"

    http = httpx.Client(base_url=base_url, event_hooks={"request": [as_text]})
    with CertsClient(token=identity.alice.token, http_client=http) as sdk:
        with _raises(UnsupportedMediaType, 415, "unsupported content type"):
            sdk.issue(identity.thing_a1.id, key_type="ec")


def test_service_unavailable(base_url: str, identity_down: IdentityFixture) -> None:
    identity = identity_down
    with CertsClient(base_url, identity.alice.token, retry=NO_RETRY) as sdk:
        with _raises(ServiceUnavailable, 503, "things service unavailable") as caught:
            sdk.list_serials(identity.thing_a1.id)
    error = caught.value
    assert isinstance(error, ServiceUnavailable) and error.attempts == 1
    assert identity.alice.token not in str(error)


def test_connection_failed() -> None:
    port = free_port()
    with CertsClient(f"http://127.0.0.1:{port}", "secret-token",
                     retry=RetryPolicy(attempts=2, initial=0.01)) as sdk:
        with pytest.raises(ConnectionFailed) as caught:
            sdk.view("abcdef")
    assert caught.value.status is None and caught.value.attempts == 2
    assert isinstance(caught.value, ServiceUnavailable)
    assert "secret-token" not in str(caught.value) and str(port) not in str(caught.value)


def test_timeout(identity_blackhole: str) -> None:
    """A server that accepts the connection and never answers: Timeout, not retried."""
    with CertsClient(f"http://{identity_blackhole}", "t", timeout=0.5) as sdk:
        with pytest.raises(Timeout) as caught:
            sdk.view("abcdef")
    assert caught.value.status is None and caught.value.attempts == 1
    assert isinstance(caught.value, ServiceUnavailable)


def test_unexpected_response(client: CertsClient) -> None:
    """Bodies that are not what the route gives: read with the view parser."""
    reader = _calls.view(None, "x").read
    with pytest.raises(UnexpectedResponse, check=lambda e: e.status == 200):
        client.send(_calls.Call("GET", "/metrics", reader))
    with pytest.raises(UnexpectedResponse, check=lambda e: e.status == 200):
        client.send(_calls.Call("GET", "/health", reader))
