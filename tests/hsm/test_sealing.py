"""Client private keys sealed at rest with the token's keys: AES-256-GCM where the token offers
it (SoftHSM2), AES-256-CBC + HMAC-SHA256 where it does not (tpm2-pkcs11)."""

import time
from collections.abc import Callable

import pytest
from pkcs11 import Attribute, ObjectClass

from hsm.client_keys import generate_client_key
from hsm.connection import HsmConnection
from hsm.errors import SealError
from hsm.sealing import HsmSealer, ensure_sealing_key, mac_key_label, sealing_format
from tests.hsm.helpers import assert_unreadable

SERIAL = b"5f2a9c0e41b7d3"
OTHER_SERIAL = b"5f2a9c0e41b7d4"


@pytest.fixture(scope="module")
def client_key_pem() -> bytes:
    return generate_client_key("ec", 256).private_key_pem.encode()


@pytest.fixture(scope="module")
def quick_sealer(sealer: HsmSealer, short_wait_connection: HsmConnection) -> HsmSealer:
    """The same token key through a connection that gives up after 1 s instead of 5 s.

    The failure tests use it so that, while opening a bad value runs into the retry deadline
    (see test_opening_bad_values_raises_seal_error), each case costs 1 s and not 5.
    """
    return HsmSealer(short_wait_connection, sealer.key_label)


@pytest.mark.parametrize("size", [0, 1, 241, 10_000])
def test_round_trip(sealer: HsmSealer, size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    sealed = sealer.seal(plaintext, SERIAL)
    assert sealer.open(sealed, SERIAL) == plaintext
    if sealing_format(sealer.connection.capabilities) == b"\x01":
        # Version byte, 12-byte nonce, ciphertext as long as the plaintext, 16-byte tag.
        assert sealed[0] == 1
        assert len(sealed) == 1 + 12 + size + 16
    else:
        # Version byte, 16-byte IV, padded CBC ciphertext, 32-byte HMAC-SHA256 tag.
        assert sealed[0] == 2
        assert len(sealed) == 1 + 16 + (size // 16 + 1) * 16 + 32


def test_sealed_key_hides_the_plaintext(sealer: HsmSealer, client_key_pem: bytes) -> None:
    first = sealer.seal(client_key_pem, SERIAL)
    second = sealer.seal(client_key_pem, SERIAL)
    assert first != second  # a fresh nonce every time
    assert first[1:13] != second[1:13]
    for sealed in (first, second):
        assert client_key_pem not in sealed
        assert b"PRIVATE KEY" not in sealed
        # No 8-byte window of the plaintext survives in the sealed bytes.
        windows = {client_key_pem[i : i + 8] for i in range(len(client_key_pem) - 8)}
        assert not any(sealed[i : i + 8] in windows for i in range(len(sealed) - 8))
        assert sealer.open(sealed, SERIAL) == client_key_pem


def test_sealing_key_stays_in_the_token(
    sealer: HsmSealer, hsm_connection: HsmConnection
) -> None:
    labels = [sealer.key_label]
    if sealing_format(hsm_connection.capabilities) == b"\x02":
        labels.append(mac_key_label(sealer.key_label))
    with hsm_connection.admin_session() as session:
        for label in labels:
            key = session.get_key(label=label, object_class=ObjectClass.SECRET_KEY)
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.NEVER_EXTRACTABLE] is True
            assert key[Attribute.VALUE_LEN] == 32
            assert_unreadable(key, Attribute.VALUE)
    assert ensure_sealing_key(hsm_connection, sealer.key_label) is False  # exists: kept


def _flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


BAD_VALUES: dict[str, Callable[[bytes], tuple[bytes, bytes]]] = {
    "other-serial": lambda sealed: (sealed, OTHER_SERIAL),
    "ciphertext-bit": lambda sealed: (_flip(sealed, 20), SERIAL),
    "tag-bit": lambda sealed: (_flip(sealed, len(sealed) - 1), SERIAL),
    "nonce-bit": lambda sealed: (_flip(sealed, 3), SERIAL),
    "one-byte-short": lambda sealed: (sealed[:-1], SERIAL),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_opening_bad_values_raises_seal_error(
    quick_sealer: HsmSealer, client_key_pem: bytes, case: str
) -> None:
    """A sealed key that was moved to another row or altered does not open: SealError, at once.

    Not HsmUnavailable after the retry deadline: the token is fine, the value is bad.
    """
    sealed = quick_sealer.seal(client_key_pem, SERIAL)
    value, aad = BAD_VALUES[case](sealed)
    started = time.monotonic()
    with pytest.raises(SealError):
        quick_sealer.open(value, aad)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"took {elapsed:.2f} s to refuse a bad sealed value"
    # The value itself still opens with the right serial (the failure did not break anything).
    assert quick_sealer.open(sealed, SERIAL) == client_key_pem


@pytest.mark.parametrize(
    "value", [b"", b"\x01", b"\x02" + bytes(40), b"\x01" + bytes(27)],
    ids=["empty", "version-only", "unknown-version", "shorter-than-nonce-and-tag"],
)
def test_malformed_values_raise_seal_error(quick_sealer: HsmSealer, value: bytes) -> None:
    with pytest.raises(SealError):
        quick_sealer.open(value, SERIAL)


def test_value_sealed_with_another_key_does_not_open(
    quick_sealer: HsmSealer, hsm_connection: HsmConnection, short_wait_connection: HsmConnection,
    client_key_pem: bytes,
) -> None:
    ensure_sealing_key(hsm_connection, "other-sealing-key")
    other = HsmSealer(short_wait_connection, "other-sealing-key")
    sealed = other.seal(client_key_pem, SERIAL)
    assert other.open(sealed, SERIAL) == client_key_pem
    with pytest.raises(SealError):
        quick_sealer.open(sealed, SERIAL)
