"""Serial normalisation, input checks and the conversion of result rows into records."""

import re
from datetime import datetime
from typing import Any

from repository.errors import NotFound
from repository.records import (
    KEY_TYPES,
    Certificate,
    NewCertificate,
    RevocationReason,
    SerialEntry,
)
from repository.schema import certs

_SERIAL = re.compile(r"[0-9a-f]{1,64}")

# Columns of a certificate without its key material, in the order _certificate() reads them.
CERT_COLUMNS = (
    certs.c.serial,
    certs.c.thing_id,
    certs.c.owner_id,
    certs.c.client_cert,
    certs.c.private_key_type,
    certs.c.key_bits,
    certs.c.created_at,
    certs.c.not_before,
    certs.c.expires_at,
    certs.c.downloaded,
    certs.c.issuing_ca,
    certs.c.ca_chain,
    certs.c.device_key,
)
KEY_COLUMNS = (certs.c.private_key_enc, certs.c.client_key)
# What a list of serials shows, in the order serial_entry() reads them.
SERIAL_COLUMNS = (certs.c.serial, certs.c.thing_id, certs.c.expires_at, certs.c.downloaded)


def lookup_serial(serial: str) -> str:
    """The stored form of a serial given by a caller; NotFound when it cannot be one.

    Case, ``:`` separators and leading zeros are ignored, so ``0D:28:A6`` (as ``openssl x509
    -serial`` or a browser spells it) finds ``d28a6``. A decimal serial imported from the Go
    service has no leading zero and no letters, so it is found by exactly its own string.
    """
    digits = serial.strip().lower().replace(":", "")
    normalized = digits.lstrip("0") or digits[:1]
    if not _SERIAL.fullmatch(normalized):
        raise NotFound(f"no certificate with serial {serial[:80]!r}")
    return normalized


def check_new(cert: NewCertificate) -> str:
    """Validate a certificate to save and return its normalised serial."""
    serial = cert.serial.strip().lower()
    if not _SERIAL.fullmatch(serial):
        raise ValueError("serial must be 1 to 64 hex digits")
    if cert.private_key_type not in KEY_TYPES:
        raise ValueError(f"private_key_type must be one of {sorted(KEY_TYPES)}")
    if not cert.thing_id:
        raise ValueError("thing_id is required")
    if cert.key_bits <= 0:
        raise ValueError("key_bits must be positive")
    aware(cert.not_before, "not_before")
    aware(cert.expires_at, "expires_at")
    return serial


def aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def certificate(row: Any, private_key_pem: str | None = None) -> Certificate:
    """A record from a row that starts with CERT_COLUMNS (positional: rows are hot here)."""
    (serial, thing_id, owner_id, pem, key_type, key_bits, created_at, not_before, expires_at,
     downloaded, issuing_ca, chain, device_key) = row[:_CERT_WIDTH]
    return Certificate(
        serial=serial,
        thing_id=thing_id,
        owner_id=owner_id,
        certificate_pem=pem,
        private_key_pem=private_key_pem,
        private_key_type=key_type,
        key_bits=key_bits,
        issued_at=created_at,
        not_before=not_before,
        expires_at=expires_at,
        downloaded=bool(downloaded),
        issuing_ca=issuing_ca or None,
        ca_chain=tuple(chain) if chain else (),
        device_key=bool(device_key),
    )


def serial_entry(row: Any) -> SerialEntry:
    """An entry of a serials list from a row that starts with SERIAL_COLUMNS."""
    serial, thing_id, expires_at, downloaded = row[:4]
    return SerialEntry(serial=serial, thing_id=thing_id, expires_at=expires_at,
                       downloaded=bool(downloaded))


_CERT_WIDTH = len(CERT_COLUMNS)
_REASONS: dict[str | None, RevocationReason | None] = {r.value: r for r in RevocationReason}


def reason(value: str | None) -> RevocationReason | None:
    return _REASONS.get(value)
