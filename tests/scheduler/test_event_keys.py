"""What rotation events put on the bus (SPEC 9), seen by a subscriber on a real nats-server: a
certificate of a device-held key is renewed with the same key and its event carries no private
key; with MF_CERTS_EVENT_KEYS=omit no event carries one."""

import dataclasses
import subprocess
from collections.abc import Callable
from typing import Any

import nats as nats_client
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hsm.authority import CertificateAuthority
from hsm.public_key import public_key_only
from repository import Store
from tests.fixtures.nats import NatsServer
from tests.scheduler.helpers import decode_event, due_certificate, issue_due
from tests.scheduler.test_processes import spawn  # noqa: F401 - a fixture

SUBJECTS = "things.*.commands.cert-rotation"


def _device_certificate(store: Store, authority: CertificateAuthority, thing_id: str
                        ) -> ec.EllipticCurvePrivateKey:
    """A due certificate of a key only the device holds; returns that key."""
    device = ec.generate_private_key(ec.SECP256R1())
    spki = device.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    made = due_certificate(authority, thing_id, key=public_key_only(spki))
    store.save(dataclasses.replace(made, private_key_pem=None, device_key=True))
    return device


async def _events(nats: NatsServer, count: int, start: Callable[[], Any]
                  ) -> dict[str, dict[str, Any]]:
    subscriber = await nats_client.connect(nats.url)
    try:
        subscription = await subscriber.subscribe(SUBJECTS)
        await subscriber.flush()
        start()
        received = {}
        for _ in range(count):
            message = await subscription.next_msg(timeout=60)
            body = decode_event(message.data)[1]
            received[body["thing_id"]] = body
        return received
    finally:
        await subscriber.close()


@pytest.mark.parametrize("event_keys", ["include", "omit"])
async def test_rotation_events_carry_keys_only_when_included_and_never_a_device_key(
    sqlite_url: str, make_store: Callable[[str], Store], authority: CertificateAuthority,
    scheduler_env: Callable[..., dict[str, str]], spawn: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    nats: NatsServer, event_keys: str,
) -> None:
    store = make_store(sqlite_url)
    device = _device_certificate(store, authority, "thing-device")
    issue_due(store, authority, "thing-server")
    env = scheduler_env(sqlite_url, MF_BROKER_URL=nats.url, MF_CERTS_CHECK_TIME="00:00",
                        MF_CERTS_EVENT_KEYS=event_keys)
    events = await _events(nats, 2, lambda: spawn(env))

    device_event = events["thing-device"]
    assert device_event["client_key"] == ""
    renewed = x509.load_pem_x509_certificate(device_event["client_cert"].encode())
    assert renewed.public_key().public_numbers() == device.public_key().public_numbers()
    [record] = store.list_by_thing("thing-device").items
    assert record.serial == device_event["serial"] and record.device_key

    server_event = events["thing-server"]
    if event_keys == "include":
        assert server_event["client_key"].startswith("-----BEGIN EC PRIVATE KEY-----")
        key = serialization.load_pem_private_key(server_event["client_key"].encode(), None)
        certificate = x509.load_pem_x509_certificate(server_event["client_cert"].encode())
        assert key.public_key().public_numbers() == certificate.public_key().public_numbers()
    else:
        assert server_event["client_key"] == ""
        assert "PRIVATE KEY" not in str(events)
        # The device fetches its new key once, over HTTPS: it is stored for that.
        downloaded = store.mark_downloaded(server_event["serial"], "thing-server")
        assert downloaded.private_key_pem is not None
        assert downloaded.private_key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
