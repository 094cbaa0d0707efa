"""The static provider's exact answers, seen through a raw gRPC channel (no client mapping)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from authority.protomfx import (
    CAN_USER_ACCESS_THING,
    GET_KEY_BY_THING_ID,
    IDENTIFY_THING,
    IDENTIFY_USER,
    auth_pb2,
    things_pb2,
)
from tests.fixtures.identity import GRANTS, IdentityFixture

RESPONSES: dict[str, type[Message]] = {
    CAN_USER_ACCESS_THING: empty_pb2.Empty,
    IDENTIFY_THING: things_pb2.ThingID,
    GET_KEY_BY_THING_ID: things_pb2.ThingKey,
    IDENTIFY_USER: auth_pb2.UserIdentity,
}


class Raw:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel

    async def call(self, path: str, request: Message) -> Message:
        fn = self.channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=RESPONSES[path].FromString,
        )
        response: Message = await fn(request, timeout=5)
        return response

    async def status(self, path: str, request: Message) -> tuple[grpc.StatusCode, str]:
        try:
            await self.call(path, request)
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""


@pytest.fixture
async def raw(identity: IdentityFixture) -> AsyncIterator[Raw]:
    async with grpc.aio.insecure_channel(identity.things_url) as channel:
        yield Raw(channel)


def expected_role(identity: IdentityFixture, user: str, thing: str) -> str | None:
    if identity.things[thing].owner == user:
        return "editor"
    for u, t, role in GRANTS:
        if (u, t) == (user, thing):
            return role
    return None


async def test_access_matrix(raw: Raw, identity: IdentityFixture) -> None:
    """Owner is editor, editor implies viewer, a viewer grant is only viewer, nothing else."""
    for user in identity.users.values():
        for thing in identity.things.values():
            role = expected_role(identity, user.name, thing.name)
            for action in ("viewer", "editor"):
                allowed = role == "editor" or (role == "viewer" and action == "viewer")
                req = things_pb2.UserAccessReq(token=user.token, id=thing.id, action=action)
                code, _ = await raw.status(CAN_USER_ACCESS_THING, req)
                want = grpc.StatusCode.OK if allowed else grpc.StatusCode.PERMISSION_DENIED
                assert code == want, (user.name, thing.name, action)


@pytest.mark.parametrize(
    ("token", "thing", "action", "code"),
    [
        ("unknown", "thing-a1", "viewer", grpc.StatusCode.UNAUTHENTICATED),
        ("", "thing-a1", "viewer", grpc.StatusCode.UNAUTHENTICATED),
        ("alice", "unknown", "viewer", grpc.StatusCode.NOT_FOUND),
        ("mallory", "unknown", "viewer", grpc.StatusCode.NOT_FOUND),
        ("alice", "", "viewer", grpc.StatusCode.INVALID_ARGUMENT),
        ("alice", "thing-a1", "admin", grpc.StatusCode.INVALID_ARGUMENT),
        ("alice", "thing-a1", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown", "thing-a1", "admin", grpc.StatusCode.UNAUTHENTICATED),  # token first
    ],
)
async def test_access_errors(
    raw: Raw, identity: IdentityFixture, token: str, thing: str, action: str, code: grpc.StatusCode
) -> None:
    special = {"unknown": identity.unknown_token, "": ""}
    tok = special[token] if token in special else identity.users[token].token
    special = {"unknown": identity.unknown_thing_id, "": ""}
    thing_id = special[thing] if thing in special else identity.things[thing].id
    req = things_pb2.UserAccessReq(token=tok, id=thing_id, action=action)
    got, details = await raw.status(CAN_USER_ACCESS_THING, req)
    assert got == code
    assert not tok or tok not in details


async def test_identify(raw: Raw, identity: IdentityFixture) -> None:
    for thing in identity.things.values():
        resp = await raw.call(IDENTIFY_THING, things_pb2.ThingKey(value=thing.key, type="internal"))
        assert resp == things_pb2.ThingID(value=thing.id)
    a1 = identity.thing_a1
    resp = await raw.call(
        IDENTIFY_THING, things_pb2.ThingKey(value=a1.external_key, type="external")
    )
    assert resp == things_pb2.ThingID(value=a1.id)


@pytest.mark.parametrize(
    ("key", "key_type", "code"),
    [
        ("unknown", "internal", grpc.StatusCode.NOT_FOUND),
        ("a1", "external", grpc.StatusCode.NOT_FOUND),
        ("a1-ext", "internal", grpc.StatusCode.NOT_FOUND),
        ("", "internal", grpc.StatusCode.NOT_FOUND),
        ("a1", "", grpc.StatusCode.INVALID_ARGUMENT),
        ("a1", "Thing", grpc.StatusCode.INVALID_ARGUMENT),
        ("a1", "INTERNAL", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_identify_errors(
    raw: Raw, identity: IdentityFixture, key: str, key_type: str, code: grpc.StatusCode
) -> None:
    value = {
        "unknown": identity.unknown_key,
        "a1": identity.thing_a1.key,
        "a1-ext": identity.thing_a1.external_key,
        "": "",
    }[key]
    assert value is not None
    got, details = await raw.status(IDENTIFY_THING, things_pb2.ThingKey(value=value, type=key_type))
    assert got == code
    assert not value or value not in details


async def test_get_key_by_thing_id(raw: Raw, identity: IdentityFixture) -> None:
    for thing in identity.things.values():
        resp = await raw.call(GET_KEY_BY_THING_ID, things_pb2.ThingID(value=thing.id))
        assert resp == things_pb2.ThingKey(value=thing.key, type="internal")
    for missing in (identity.unknown_thing_id, ""):
        code, _ = await raw.status(GET_KEY_BY_THING_ID, things_pb2.ThingID(value=missing))
        assert code == grpc.StatusCode.NOT_FOUND


async def test_auth_identify(raw: Raw, identity: IdentityFixture) -> None:
    for user in identity.users.values():
        resp = await raw.call(IDENTIFY_USER, auth_pb2.Token(value=user.token))
        assert resp == auth_pb2.UserIdentity(id=user.id, email=user.email)
    for token in (identity.unknown_token, "", identity.alice.id, identity.thing_a1.key):
        code, details = await raw.status(IDENTIFY_USER, auth_pb2.Token(value=token))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert not token or token not in details


async def test_unknown_method(raw: Raw) -> None:
    fn = raw.channel.unary_unary("/protomfx.ThingsService/Nope")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fn(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_malformed_request(raw: Raw) -> None:
    fn = raw.channel.unary_unary(CAN_USER_ACCESS_THING)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await fn(b"\xff\xff\xff", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
