"""The clients against the real static provider: every RPC, every outcome it can produce."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from authority.identity import (
    AuthClient,
    AuthenticationFailed,
    AuthorizationFailed,
    IdentityError,
    ThingsClient,
    UserIdentity,
)
from tests.fixtures.identity import IdentityFixture

# (user, thing, action) -> allowed, from the table in tests/fixtures/identity.py
ACCESS = [
    ("alice", "thing-a1", "editor", True),
    ("alice", "thing-a1", "viewer", True),
    ("alice", "thing-a2", "editor", True),
    ("alice", "thing-b1", "viewer", False),
    ("bob", "thing-a1", "viewer", True),
    ("bob", "thing-a1", "editor", False),
    ("bob", "thing-a2", "viewer", False),
    ("bob", "thing-b1", "editor", True),
    ("carol", "thing-a1", "editor", True),
    ("carol", "thing-a1", "viewer", True),
    ("carol", "thing-b1", "viewer", False),
    ("mallory", "thing-a1", "viewer", False),
    ("mallory", "thing-b1", "editor", False),
]


@pytest.mark.parametrize(("user", "thing", "action", "allowed"), ACCESS)
async def test_can_access(
    things: ThingsClient,
    identity: IdentityFixture,
    user: str,
    thing: str,
    action: str,
    allowed: bool,
) -> None:
    call = things.can_access(identity.users[user].token, identity.things[thing].id, action)  # type: ignore[arg-type]
    if allowed:
        await call  # returns None: allowed
    else:
        with pytest.raises(AuthorizationFailed) as info:
            await call
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.service == "things"
        assert info.value.method == "CanUserAccessThing"


async def test_can_access_unknown_token(things: ThingsClient, identity: IdentityFixture) -> None:
    for token in (identity.unknown_token, ""):
        with pytest.raises(AuthenticationFailed) as info:
            await things.can_access(token, identity.thing_a1.id, "viewer")
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_can_access_unknown_thing(things: ThingsClient, identity: IdentityFixture) -> None:
    with pytest.raises(AuthorizationFailed) as info:
        await things.can_access(identity.alice.token, identity.unknown_thing_id, "editor")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_can_access_rejects_bad_action_locally(things: ThingsClient) -> None:
    with pytest.raises(ValueError, match="action"):
        await things.can_access("t", "x", "admin")  # type: ignore[arg-type]


async def test_identify_thing(things: ThingsClient, identity: IdentityFixture) -> None:
    for thing in identity.things.values():
        assert await things.identify_thing(thing.key) == thing.id
        assert await things.identify_thing(thing.key, "internal") == thing.id
    a1 = identity.thing_a1
    assert a1.external_key
    assert await things.identify_thing(a1.external_key, "external") == a1.id


@pytest.mark.parametrize(
    ("which", "key_type"),
    [
        ("unknown", "internal"),
        ("unknown", "external"),
        ("external-as-internal", "internal"),
        ("internal-as-external", "external"),
        ("empty", "internal"),
    ],
)
async def test_identify_thing_unknown_key(
    things: ThingsClient, identity: IdentityFixture, which: str, key_type: str
) -> None:
    key = {
        "unknown": identity.unknown_key,
        "external-as-internal": identity.thing_a1.external_key,
        "internal-as-external": identity.thing_a1.key,
        "empty": "",
    }[which]
    assert key is not None
    with pytest.raises(AuthenticationFailed) as info:
        await things.identify_thing(key, key_type)  # type: ignore[arg-type]
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.method == "Identify"


async def test_identify_thing_rejects_bad_type_locally(things: ThingsClient) -> None:
    with pytest.raises(ValueError, match="key_type"):
        await things.identify_thing("k", "Thing")  # type: ignore[arg-type]


async def test_thing_key(things: ThingsClient, identity: IdentityFixture) -> None:
    for thing in identity.things.values():
        assert await things.thing_key(thing.id) == thing.key
    with pytest.raises(AuthorizationFailed) as info:
        await things.thing_key(identity.unknown_thing_id)
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert info.value.method == "GetKeyByThingID"


async def test_identify_user(auth: AuthClient, identity: IdentityFixture) -> None:
    for user in identity.users.values():
        who = await auth.identify_user(user.token)
        assert who == UserIdentity(user.id, user.email)
        user_id, email = who
        assert (user_id, email) == (user.id, user.email)
    for token in (identity.unknown_token, "", identity.thing_a1.key):
        with pytest.raises(AuthenticationFailed) as info:
            await auth.identify_user(token)
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.service == "auth"


async def test_errors_share_a_base(things: ThingsClient, identity: IdentityFixture) -> None:
    with pytest.raises(IdentityError):
        await things.can_access(identity.mallory.token, identity.thing_a1.id, "viewer")


async def test_concurrent_calls_share_one_channel(
    things: ThingsClient, auth: AuthClient, identity: IdentityFixture
) -> None:
    async def one(i: int) -> None:
        if i % 3 == 0:
            await things.can_access(identity.bob.token, identity.thing_a1.id, "viewer")
        elif i % 3 == 1:
            assert await things.identify_thing(identity.thing_b1.key) == identity.thing_b1.id
        else:
            assert (await auth.identify_user(identity.carol.token)).id == identity.carol.id

    await asyncio.gather(*(one(i) for i in range(300)))


async def test_both_services_on_both_addresses(identity: IdentityFixture) -> None:
    async with (
        AuthClient(identity.things_url) as auth_on_things,
        ThingsClient(identity.auth_url) as things_on_auth,
    ):
        assert (await auth_on_things.identify_user(identity.alice.token)).id == identity.alice.id
        assert await things_on_auth.identify_thing(identity.thing_a2.key) == identity.thing_a2.id


async def test_ready(things: ThingsClient) -> None:
    assert await things.ready(timeout=5)


async def test_close_then_reuse(identity: IdentityFixture) -> None:
    client = ThingsClient(identity.things_url)
    await client.can_access(identity.alice.token, identity.thing_a1.id, "editor")
    await client.close()
    await client.close()  # idempotent
    await client.can_access(identity.alice.token, identity.thing_a1.id, "editor")
    await client.close()


def test_client_is_usable_from_successive_event_loops(identity: IdentityFixture) -> None:
    """A client made outside any loop works in one loop, then in another (e.g. after a fork)."""
    client = ThingsClient(identity.things_url)
    results: list[str] = []

    def run() -> None:
        for _ in range(2):
            results.append(asyncio.run(client.identify_thing(identity.thing_a1.key)))

    # In a thread, so asyncio.run does not touch the main thread's (pytest's) event loop.
    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=30)
    assert results == [identity.thing_a1.id, identity.thing_a1.id]


def test_constructor_validation(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="address"):
        ThingsClient("")
    with pytest.raises(ValueError, match="timeout"):
        AuthClient("localhost:8181", timeout=0)
    client = ThingsClient("localhost:8183", timeout=0.5)
    assert client.timeout == 0.5
    assert client.tls is False
    assert "localhost:8183" in repr(client)
