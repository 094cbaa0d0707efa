"""Every gRPC status of every RPC maps to the documented error (in-process fake server)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message

from authority.identity import (
    AuthClient,
    AuthenticationFailed,
    AuthorizationFailed,
    IdentityError,
    IdentityUnavailable,
    InvalidIdentityRequest,
    ThingsClient,
)
from authority.protomfx import (
    CAN_USER_ACCESS_THING,
    GET_KEY_BY_THING_ID,
    IDENTIFY_THING,
    IDENTIFY_USER,
    auth_pb2,
    things_pb2,
)

from .fake import Behaviour, FakeIdentityServer

ERROR_CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]

USER_ROUTE = {
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationFailed,
    grpc.StatusCode.PERMISSION_DENIED: AuthorizationFailed,
    grpc.StatusCode.NOT_FOUND: AuthorizationFailed,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidIdentityRequest,
}
CREDENTIAL = {**USER_ROUTE, grpc.StatusCode.NOT_FOUND: AuthenticationFailed}

CASES = {
    "can_access": (CAN_USER_ACCESS_THING, USER_ROUTE, "things"),
    "identify_thing": (IDENTIFY_THING, CREDENTIAL, "things"),
    "thing_key": (GET_KEY_BY_THING_ID, USER_ROUTE, "things"),
    "identify_user": (IDENTIFY_USER, CREDENTIAL, "auth"),
}


async def invoke(method: str, addr: str, timeout: float = 1.0) -> object:
    if method == "identify_user":
        async with AuthClient(addr, timeout=timeout) as auth:
            return await auth.identify_user("tok-secret-1234")
    async with ThingsClient(addr, timeout=timeout) as things:
        if method == "can_access":
            await things.can_access("tok-secret-1234", "thing-1", "editor")
            return None
        if method == "identify_thing":
            return await things.identify_thing("key-secret-5678", "external")
        return await things.thing_key("thing-1")


@pytest.mark.parametrize("method", list(CASES))
@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
async def test_status_maps_to_error(
    fake: FakeIdentityServer, method: str, code: grpc.StatusCode
) -> None:
    path, mapping, service = CASES[method]
    fake.set(path, Behaviour(code=code))
    expected = mapping.get(code, IdentityUnavailable)
    with pytest.raises(IdentityError) as info:
        await invoke(method, fake.addr)
    err = info.value
    assert type(err) is expected
    assert err.code == code
    assert err.service == service
    if expected is IdentityUnavailable:
        assert str(err) == f"{service} service unavailable"
    assert err.__cause__ is None and err.__suppress_context__


async def test_requests_carry_the_arguments(fake: FakeIdentityServer) -> None:
    for method in CASES:
        await invoke(method, fake.addr)
    got = dict(fake.requests)
    assert got[CAN_USER_ACCESS_THING] == things_pb2.UserAccessReq(
        token="tok-secret-1234", id="thing-1", action="editor"
    )
    assert got[IDENTIFY_THING] == things_pb2.ThingKey(value="key-secret-5678", type="external")
    assert got[GET_KEY_BY_THING_ID] == things_pb2.ThingID(value="thing-1")
    assert got[IDENTIFY_USER] == auth_pb2.Token(value="tok-secret-1234")


async def test_success_values(fake: FakeIdentityServer) -> None:
    assert await invoke("can_access", fake.addr) is None
    assert await invoke("identify_thing", fake.addr) == "thing-1"
    assert await invoke("thing_key", fake.addr) == "key-1"
    assert await invoke("identify_user", fake.addr) == ("user-1", "user@example.com")


@pytest.mark.parametrize(
    ("method", "reply", "expected"),
    [
        ("identify_thing", things_pb2.ThingID(), AuthenticationFailed),
        ("identify_user", auth_pb2.UserIdentity(email="x@example.com"), AuthenticationFailed),
        ("thing_key", things_pb2.ThingKey(type="internal"), IdentityUnavailable),
    ],
)
async def test_empty_answers_are_refused(
    fake: FakeIdentityServer, method: str, reply: Message, expected: type[IdentityError]
) -> None:
    path = CASES[method][0]
    fake.set(path, Behaviour(reply=reply))
    with pytest.raises(expected) as info:
        await invoke(method, fake.addr)
    assert info.value.code is None


@pytest.mark.parametrize(
    "raw", [b"\x0a\x05ab", b"\x0a\x01\xff", b"\xff\xff\xff"], ids=["truncated", "utf8", "junk"]
)
async def test_undecodable_answer_is_unavailable(fake: FakeIdentityServer, raw: bytes) -> None:
    fake.set(IDENTIFY_USER, Behaviour(reply=raw))
    with pytest.raises(IdentityUnavailable) as info:
        await invoke("identify_user", fake.addr)
    assert str(info.value) == "auth service unavailable"
