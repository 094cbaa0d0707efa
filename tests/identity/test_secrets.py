"""No token or thing key ever reaches an exception's text, its traceback or a log line."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

import grpc
import pytest

from authority.identity import AuthClient, IdentityError, ThingsClient
from authority.protomfx import CAN_USER_ACCESS_THING, IDENTIFY_THING, IDENTIFY_USER
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port

from .fake import Behaviour, FakeIdentityServer

SECRET_TOKEN = "tok-SECRET-4b1d0e7c9a"
SECRET_KEY = "key-SECRET-77f2a3c1d0"


def assert_clean(err: BaseException, text: str, *secrets: str) -> None:
    rendered = [
        str(err),
        repr(err),
        repr(err.args),
        "".join(traceback.format_exception(err)),
        text,
    ]
    for secret in secrets:
        assert secret
        for r in rendered:
            assert secret not in r


async def expect_failure(
    call: Callable[[], Awaitable[object]], caplog: pytest.LogCaptureFixture
) -> tuple[IdentityError, str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(IdentityError) as info:
            await call()
    return info.value, caplog.text


async def test_real_provider_failures(
    identity: IdentityFixture, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        ThingsClient(identity.things_url) as things,
        AuthClient(identity.auth_url) as auth,
    ):
        cases: list[tuple[Callable[[], Awaitable[object]], str]] = [
            (lambda: things.can_access(SECRET_TOKEN, identity.thing_a1.id, "viewer"), SECRET_TOKEN),
            (
                lambda: things.can_access(identity.mallory.token, identity.thing_a1.id, "editor"),
                identity.mallory.token,
            ),
            (
                lambda: things.can_access(identity.bob.token, identity.unknown_thing_id, "viewer"),
                identity.bob.token,
            ),
            (lambda: things.identify_thing(SECRET_KEY), SECRET_KEY),
            (lambda: things.identify_thing(SECRET_KEY, "external"), SECRET_KEY),
            (lambda: auth.identify_user(SECRET_TOKEN), SECRET_TOKEN),
        ]
        for call, secret in cases:
            err, logs = await expect_failure(call, caplog)
            assert_clean(err, logs, secret)


async def test_unavailable_failures(
    identity_blackhole: str, caplog: pytest.LogCaptureFixture
) -> None:
    for addr in (identity_blackhole, f"127.0.0.1:{free_port()}"):
        async with ThingsClient(addr, timeout=0.3) as things, AuthClient(addr, timeout=0.3) as auth:
            for call, secret in [
                (lambda: things.can_access(SECRET_TOKEN, "thing", "editor"), SECRET_TOKEN),
                (lambda: things.identify_thing(SECRET_KEY), SECRET_KEY),
                (lambda: auth.identify_user(SECRET_TOKEN), SECRET_TOKEN),
            ]:
                err, logs = await expect_failure(call, caplog)
                assert_clean(err, logs, secret)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
    ],
    ids=lambda c: c.name,
)
async def test_peer_echoing_the_secret_is_redacted(
    fake: FakeIdentityServer, caplog: pytest.LogCaptureFixture, code: grpc.StatusCode
) -> None:
    """A careless peer puts the credential into its status details: we still never show it."""
    for path in (CAN_USER_ACCESS_THING, IDENTIFY_THING, IDENTIFY_USER):
        fake.set(path, Behaviour(code=code, details="rejected", echo_secret=True))
    async with ThingsClient(fake.addr) as things, AuthClient(fake.addr) as auth:
        for call, secret in [
            (lambda: things.can_access(SECRET_TOKEN, "thing", "editor"), SECRET_TOKEN),
            (lambda: things.identify_thing(SECRET_KEY, "internal"), SECRET_KEY),
            (lambda: auth.identify_user(SECRET_TOKEN), SECRET_TOKEN),
        ]:
            err, logs = await expect_failure(call, caplog)
            assert err.code == code
            assert_clean(err, logs, secret)
            assert "[redacted]" in logs
