"""Rotation events over a real nats-server: delivery, and no loss while NATS is down."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats as nats_client
import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StorageType

from hsm.authority import CertificateAuthority
from repository import Store
from scheduler.relay import OutboxRelay
from tests.fixtures.nats import NatsServer
from tests.scheduler.helpers import check_certificate, decode_event, issue_due

SUBJECTS = "things.*.commands.cert-rotation"


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def outbox_empty(store: Store, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(store.outbox_size):
        assert time.monotonic() < deadline, "outbox not drained in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def running_relay(store: Store, nats: NatsServer) -> AsyncIterator[OutboxRelay]:
    relay = OutboxRelay(store, nats.url, poll_interval=0.2, backoff_initial=0.05,
                        backoff_max=0.5, connect_timeout=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    yield relay
    stop.set()
    await asyncio.wait_for(task, timeout=10)


async def test_subscriber_receives_the_new_certificate(
    store: Store, authority: CertificateAuthority, make_rotator, nats: NatsServer,
    running_relay: OutboxRelay, ca_pem_path: Path, tmp_path: Path,
) -> None:
    subscriber = await nats_client.connect(nats.url)
    try:
        subscription = await subscriber.subscribe(SUBJECTS)
        await subscriber.flush()
        old = {thing: issue_due(store, authority, thing, key_type=kind, bits=bits)
               for thing, kind, bits in (("thing-n1", "ec", 256), ("thing-n2", "ec", 521))}

        report = await make_rotator(store, on_rotated=running_relay.wake).run_once()
        assert len(report.rotated) == 2

        received = [await subscription.next_msg(timeout=10) for _ in old]
        for msg in received:
            message, body = decode_event(msg.data)
            thing = body["thing_id"]
            assert msg.subject == f"things.{thing}.commands.cert-rotation"
            assert message.publisher == thing and message.subtopic == "cert-rotation"
            assert message.contentType == "application/json" and message.protocol == "certs"
            assert msg.headers and len(msg.headers["Nats-Msg-Id"]) == 38
            [new] = store.list_by_thing(thing).items
            assert body["serial"] == new.serial != old[thing].serial
            assert new.key_bits == old[thing].key_bits
            check_certificate(body, ca_pem_path, tmp_path)
        assert {decode_event(m.data)[1]["thing_id"] for m in received} == set(old)
        await outbox_empty(store)
        with pytest.raises(NatsTimeout):
            await subscription.next_msg(timeout=0.5)  # nothing twice
    finally:
        await subscriber.close()


async def test_events_wait_while_nats_is_down(
    store: Store, authority: CertificateAuthority, make_rotator, nats: NatsServer,
    running_relay: OutboxRelay,
) -> None:
    # A JetStream stream records every event the server accepts, including those published
    # while no test subscriber could be connected yet (right after the restart).
    admin = await nats_client.connect(nats.url)
    js = admin.jetstream()
    stream = f"ROTATIONS_{int(time.time() * 1000)}"
    await js.add_stream(name=stream, subjects=[SUBJECTS], storage=StorageType.FILE)
    await admin.close()
    try:
        first = [issue_due(store, authority, f"thing-up-{i}") for i in range(3)]
        await make_rotator(store, on_rotated=running_relay.wake).run_once()
        await outbox_empty(store)  # published while NATS is up

        second = [issue_due(store, authority, f"thing-down-{i}") for i in range(6)]
        batches = 0

        def stop_nats_after_first_batch() -> None:
            nonlocal batches
            running_relay.wake()
            batches += 1
            if batches == 1:
                nats.stop()  # NATS goes away in the middle of the rotation run

        report = await make_rotator(store, batch=2,
                                    on_rotated=stop_nats_after_first_batch).run_once()
        assert len(report.rotated) == 6 and batches == 3
        failures = running_relay.failures
        await wait_for(lambda: running_relay.failures >= failures + 3)
        assert await asyncio.to_thread(store.outbox_size) >= 4  # kept, not dropped

        nats.start()
        await outbox_empty(store)

        reader = await nats_client.connect(nats.url)
        try:
            js = reader.jetstream()
            info = await js.stream_info(stream)
            assert info.state.messages == len(first) + len(second)
            ids, serials = set(), set()
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream, seq)
                assert msg.headers is not None and msg.data is not None
                ids.add(msg.headers["Nats-Msg-Id"])
                serials.add(decode_event(msg.data)[1]["serial"])
            active = {store.list_by_thing(c.thing_id).items[0].serial for c in first + second}
            assert serials == active  # every new certificate, each once
            assert len(ids) == len(first) + len(second)
        finally:
            await reader.jetstream().delete_stream(stream)
            await reader.close()
    finally:
        nats.start()
