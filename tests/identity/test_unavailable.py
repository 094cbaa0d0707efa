"""Down, silent or slow services give IdentityUnavailable quickly; clients reconnect alone."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
import pytest

from authority.identity import AuthClient, IdentityUnavailable, ThingsClient
from authority.protomfx import CAN_USER_ACCESS_THING, IDENTIFY_USER
from tests.fixtures.identity import IdentityFixture
from tests.fixtures.ports import free_port

from .fake import Behaviour, FakeIdentityServer

TIMEOUT = 0.3
# Generous allowance over the deadline for a loaded CI machine, still far below "hangs".
SLACK = 1.0


async def timed_failure(coro: object) -> tuple[IdentityUnavailable, float]:
    start = time.monotonic()
    with pytest.raises(IdentityUnavailable) as info:
        await coro  # type: ignore[misc]
    return info.value, time.monotonic() - start


async def test_silent_server_times_out(identity_blackhole: str) -> None:
    """A peer that accepts TCP and never answers: the call ends at its deadline."""
    async with ThingsClient(identity_blackhole, timeout=TIMEOUT) as things:
        err, elapsed = await timed_failure(things.can_access("tok-x", "thing", "viewer"))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert str(err) == "things service unavailable"
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + SLACK
    async with AuthClient(identity_blackhole, timeout=TIMEOUT) as auth:
        err, elapsed = await timed_failure(auth.identify_user("tok-x"))
    assert str(err) == "auth service unavailable"
    assert elapsed < TIMEOUT + SLACK


async def test_slow_handler_times_out(fake: FakeIdentityServer) -> None:
    fake.set(CAN_USER_ACCESS_THING, Behaviour(delay=3.0))
    fake.set(IDENTIFY_USER, Behaviour(delay=3.0))
    async with ThingsClient(fake.addr, timeout=TIMEOUT) as things:
        err, elapsed = await timed_failure(things.can_access("tok-x", "thing", "editor"))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < TIMEOUT + SLACK
    async with AuthClient(fake.addr, timeout=TIMEOUT) as auth:
        err, elapsed = await timed_failure(auth.identify_user("tok-x"))
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < TIMEOUT + SLACK


async def test_nothing_listening() -> None:
    addr = f"127.0.0.1:{free_port()}"
    async with ThingsClient(addr, timeout=1.0) as things:
        for _ in range(3):  # first call and calls while the channel is in back-off
            err, elapsed = await timed_failure(things.identify_thing("key-x"))
            assert err.code == grpc.StatusCode.UNAVAILABLE
            assert elapsed < 1.0 + SLACK


async def test_unresolvable_host() -> None:
    async with AuthClient("no-such-host.invalid:8181", timeout=1.0) as auth:
        err, elapsed = await timed_failure(auth.identify_user("tok-x"))
    assert err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert elapsed < 1.0 + SLACK


async def test_not_a_grpc_server() -> None:
    """A peer speaking something else (here: an HTTP/1 reply, then close)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", free_port()))
    srv.listen(8)
    srv.setblocking(False)
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        while True:
            conn, _ = await loop.sock_accept(srv)
            await loop.sock_sendall(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            conn.close()

    task = asyncio.create_task(serve())
    try:
        async with ThingsClient(f"127.0.0.1:{srv.getsockname()[1]}", timeout=1.0) as things:
            _, elapsed = await timed_failure(things.thing_key("thing"))
        assert elapsed < 1.0 + SLACK
    finally:
        task.cancel()
        srv.close()


async def test_stopped_provider(identity_down: IdentityFixture) -> None:
    identity = identity_down
    async with (
        ThingsClient(identity.things_url, timeout=1.0) as things,
        AuthClient(identity.auth_url, timeout=1.0) as auth,
    ):
        calls = [
            things.can_access(identity.alice.token, identity.thing_a1.id, "editor"),
            things.identify_thing(identity.thing_a1.key),
            things.thing_key(identity.thing_a1.id),
        ]
        for call in calls:
            err, elapsed = await timed_failure(call)
            assert str(err) == "things service unavailable"
            assert elapsed < 1.0
        err, elapsed = await timed_failure(auth.identify_user(identity.alice.token))
        assert str(err) == "auth service unavailable"
        assert elapsed < 1.0


async def wait_until_ok(client: ThingsClient, identity: IdentityFixture, limit: float) -> float:
    start = time.monotonic()
    while True:
        try:
            assert await client.identify_thing(identity.thing_a1.key) == identity.thing_a1.id
            return time.monotonic() - start
        except IdentityUnavailable:
            if time.monotonic() - start > limit:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
async def test_reconnects_after_restart(identity: IdentityFixture, kill: bool) -> None:
    async with ThingsClient(identity.things_url, timeout=1.0) as things:
        await things.can_access(identity.alice.token, identity.thing_a1.id, "editor")
        with identity.stopped(kill=kill):
            with pytest.raises(IdentityUnavailable):
                await things.can_access(identity.alice.token, identity.thing_a1.id, "editor")
            # Stay down long enough for the channel's back-off to grow to its cap.
            await asyncio.sleep(3.0)
            with pytest.raises(IdentityUnavailable):
                await things.identify_thing(identity.thing_a1.key)
        # Back on the same port: the same client recovers without being rebuilt, within the
        # back-off cap (2 s by default) plus jitter.
        elapsed = await wait_until_ok(things, identity, limit=6.0)
        assert elapsed < 4.0
        await things.can_access(identity.alice.token, identity.thing_a1.id, "editor")


async def test_ready_is_false_when_down(identity_blackhole: str) -> None:
    async with ThingsClient(identity_blackhole, timeout=TIMEOUT) as things:
        assert await things.ready() is False
