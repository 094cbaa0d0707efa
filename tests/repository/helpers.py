"""Test material: an AES-GCM sealer in software and realistic certificates to store."""

import os
import secrets
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from repository import NewCertificate

try:  # the HSM sealer's error, when the hsm package is there
    from hsm.errors import SealError

    SEAL_ERRORS: tuple[type[Exception], ...] = (InvalidTag, SealError)
except ImportError:  # pragma: no cover - the repository tests run without hsm too
    SEAL_ERRORS = (InvalidTag,)


class SoftwareSealer:
    """AES-256-GCM in software, same contract as the HSM sealer (for worker processes)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self.key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return b"\x01" + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(sealed[1:13], sealed[13:], aad)


def new_serial() -> str:
    """A serial as the service makes them: 159 random bits, lowercase hex."""
    return format(secrets.randbits(159) | (1 << 158), "x")


def make_cert(
    thing_id: str = "thing-1",
    *,
    serial: str | None = None,
    expires_at: datetime | None = None,
    owner_id: str | None = "user-1",
) -> NewCertificate:
    """A real EC P-256 key and a self-signed client certificate with that serial."""
    serial = serial or new_serial()
    now = datetime.now(UTC).replace(microsecond=0)
    expires_at = expires_at or now + timedelta(days=90)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing_id)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int(serial, 16))
        .not_valid_before(now - timedelta(seconds=60))
        .not_valid_after(max(expires_at, now - timedelta(seconds=30)))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    return NewCertificate(
        serial=serial,
        thing_id=thing_id,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        private_key_pem=key_pem,
        private_key_type="ec",
        key_bits=256,
        not_before=now - timedelta(seconds=60),
        expires_at=expires_at,
        owner_id=owner_id,
    )


def key_der(private_key_pem: str) -> bytes:
    """The DER bytes inside a PEM private key."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
