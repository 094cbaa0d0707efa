"""The device helper: enroll (issue + download today), save and load with safe file modes,
renew before expiry, and the CSR path whichever way the service treats `csr`."""

import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from certs_sdk import CertsClient, Device, NotFound
from certs_sdk.files import CA_FILE, CERT_FILE, KEY_FILE
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.fixtures.identity import IdentityFixture
from tests.sdk.checks import assert_key_matches, assert_openssl_verifies, public_der


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def test_enroll_save_load_renew(client: CertsClient, identity: IdentityFixture, ca_pem: str,
                                tmp_path: Path) -> None:
    a1 = identity.thing_a1
    device = Device(client, a1.id, a1.key, key_type="ec", key_bits=384, ttl="9h")
    first = device.enroll()
    assert (first.thing_id, first.key_bits, first.downloaded) == (a1.id, 384, True)
    assert client.view(first.serial).downloaded is True
    assert_key_matches(first)
    assert_openssl_verifies(first.certificate, ca_pem, tmp_path)
    assert device.due() is False
    assert device.renew_if_due() is None

    folder = tmp_path / "creds"
    device.save(folder)
    assert _mode(folder / KEY_FILE) == 0o600
    assert _mode(folder / CERT_FILE) == 0o644 & ~_umask()
    assert (folder / CA_FILE).read_text().strip() == ca_pem.strip()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []

    restarted = Device(client, a1.id, a1.key, key_type="ec", key_bits=384, ttl="9h")
    loaded = restarted.load(folder)
    assert (loaded.serial, loaded.thing_id, loaded.key_type, loaded.key_bits) == (
        first.serial, a1.id, "ec", 384)
    assert loaded.expires_at == first.expires_at
    assert_key_matches(loaded)

    # Seven of nine hours later, less than a third of the lifetime is left.
    later = first.expires_at - timedelta(hours=2)
    assert restarted.due(later) is True
    renewed = restarted.renew_if_due(later)
    assert renewed is not None and renewed.serial != first.serial
    assert renewed.downloaded and renewed.key_bits == 384
    assert_key_matches(renewed)
    assert_openssl_verifies(renewed.certificate, ca_pem, tmp_path)
    with pytest.raises(NotFound):
        client.view(first.serial)
    restarted.save(folder)
    assert _mode(folder / KEY_FILE) == 0o600
    assert restarted.load(folder).serial == renewed.serial


def test_external_key_device(client: CertsClient, identity: IdentityFixture) -> None:
    a1 = identity.thing_a1
    assert a1.external_key
    device = Device(client, a1.id, a1.external_key, external=True, key_type="rsa")
    cert = device.enroll()
    assert (cert.key_type, cert.key_bits) == ("rsa", 2048)
    assert_key_matches(cert)


def test_csr_enrollment(client: CertsClient, identity: IdentityFixture, ca_pem: str,
                        tmp_path: Path) -> None:
    """With `use_csr` the device's own key is certified: the service answers with no key, and
    the device's certificate holds the key it made (the service supports `csr`, SPEC 3)."""
    a2 = identity.thing_a2
    device = Device(client, a2.id, a2.key, key_type="ec", use_csr=True)
    cert = device.enroll()
    assert cert.private_key
    key = load_pem_private_key(cert.private_key.encode(), password=None)
    assert public_der(key.public_key()) == public_der(cert.x509().public_key())
    assert_openssl_verifies(cert.certificate, ca_pem, tmp_path)
    renewed = device.renew()
    assert renewed.serial != cert.serial
    assert_key_matches(renewed)


def test_a_device_needs_credentials_first(client: CertsClient,
                                          identity: IdentityFixture) -> None:
    device = Device(client, identity.thing_a1.id, identity.thing_a1.key)
    with pytest.raises(RuntimeError):
        device.renew()
    with pytest.raises(ValueError):
        Device(client, identity.thing_a1.id, identity.thing_a1.key, renew_at=1.5)
