"""Retries on 503: the identity provider is stopped and started again while a request retries.
Requests safe to repeat (GET, DELETE) succeed once it is back; issue is never repeated."""

from collections.abc import Callable

import pytest
from certs_sdk import (
    AsyncCertsClient,
    CertsClient,
    NotFound,
    RetryEvent,
    RetryPolicy,
    ServiceUnavailable,
)

from tests.fixtures.identity import IdentityFixture

OUTAGE = 2.0  # seconds without the identity provider
# Enough attempts to outlast the outage and the service's gRPC reconnection.
PATIENT = RetryPolicy(attempts=20, initial=0.2, factor=1.5, maximum=1.5)
UNAVAILABLE = "503 things service unavailable"
Outage = Callable[[float], None]


def _patient(base_url: str, token: str, events: list[RetryEvent]) -> CertsClient:
    return CertsClient(base_url, token, timeout=30, retry=PATIENT, on_retry=events.append)


def test_a_get_retries_until_the_identity_service_is_back(
        base_url: str, client: CertsClient, identity: IdentityFixture,
        identity_outage: Outage) -> None:
    issued = client.issue(identity.thing_a1.id, key_type="ec")
    starts = identity.provider.starts
    events: list[RetryEvent] = []
    with _patient(base_url, identity.alice.token, events) as sdk:
        identity_outage(OUTAGE)
        viewed = sdk.view(issued.serial)
    assert viewed.serial == issued.serial and viewed.private_key is None
    assert identity.provider.starts == starts + 1
    assert len(events) >= 2, events
    assert {event.reason for event in events} == {UNAVAILABLE}
    assert [event.attempt for event in events] == list(range(1, len(events) + 1))
    assert all(event.method == "GET" and event.delay <= PATIENT.maximum * (1 + PATIENT.jitter)
               for event in events)


def test_revoke_is_retried_and_happens_once(
        base_url: str, client: CertsClient, identity: IdentityFixture,
        identity_outage: Outage) -> None:
    issued = client.issue(identity.thing_a1.id, key_type="ec")
    events: list[RetryEvent] = []
    with _patient(base_url, identity.alice.token, events) as sdk:
        identity_outage(OUTAGE)
        revocation = sdk.revoke(issued.serial)
    assert revocation.serial == issued.serial
    assert events and {event.reason for event in events} == {UNAVAILABLE}
    with pytest.raises(NotFound):
        client.view(issued.serial)


def test_issue_is_not_repeated(base_url: str, client: CertsClient, identity: IdentityFixture,
                               identity_outage: Outage) -> None:
    thing = identity.thing_a2.id
    before = client.list_serials(thing, limit=200).total
    events: list[RetryEvent] = []
    with _patient(base_url, identity.alice.token, events) as sdk:
        identity_outage(OUTAGE)
        with pytest.raises(ServiceUnavailable) as caught:
            sdk.issue(thing, key_type="ec")
    assert (caught.value.status, caught.value.attempts, events) == (503, 1, [])
    with _patient(base_url, identity.alice.token, []) as sdk:
        assert sdk.list_serials(thing, limit=200).total == before


async def test_the_async_client_retries_too(
        base_url: str, async_client: AsyncCertsClient, identity: IdentityFixture,
        identity_outage: Outage) -> None:
    issued = await async_client.issue(identity.thing_a1.id, key_type="ec")
    events: list[RetryEvent] = []
    async with AsyncCertsClient(base_url, identity.alice.token, timeout=30, retry=PATIENT,
                                on_retry=events.append) as sdk:
        identity_outage(OUTAGE)
        page = await sdk.list_serials(identity.thing_a1.id, serial=issued.serial)
    assert page.serials == (issued.serial,)
    assert events and {event.reason for event in events} == {UNAVAILABLE}
