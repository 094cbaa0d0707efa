"""The few DER encodings the hot paths assemble by hand (X.690): tag, length, contents."""

import base64
from datetime import UTC, datetime

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
UTF8_STRING = 0x0C
SET = 0x31


def length(size: int) -> bytes:
    """DER length octets for contents of ``size`` bytes."""
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def tlv(tag: int, contents: bytes) -> bytes:
    """One complete DER value with a single-octet tag."""
    return bytes((tag,)) + length(len(contents)) + contents


def integer(value: int) -> bytes:
    """DER INTEGER of a non-negative number."""
    octets = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return tlv(INTEGER, octets)


def time(moment: datetime) -> bytes:
    """RFC 5280 Time: UTCTime through 2049, GeneralizedTime from 2050, always in UTC."""
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    if m.year < 2050:
        return b"\x17\x0d%02d%02d%02d%02d%02d%02dZ" % (
            m.year % 100, m.month, m.day, m.hour, m.minute, m.second)
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (
        m.year, m.month, m.day, m.hour, m.minute, m.second)


def ecdsa_signature(raw: bytes) -> bytes:
    """PKCS#11 ECDSA output r||s as the DER ECDSA-Sig-Value X.509 needs."""
    half = len(raw) // 2
    r = int.from_bytes(raw[:half], "big")
    s = int.from_bytes(raw[half:], "big")
    return tlv(SEQUENCE, integer(r) + integer(s))


def read(buffer: bytes, offset: int = 0) -> tuple[int, int, int]:
    """The value starting at ``offset``: (tag, start of contents, end of contents)."""
    tag = buffer[offset]
    first = buffer[offset + 1]
    if first < 0x80:
        return tag, offset + 2, offset + 2 + first
    count = first & 0x7F
    size = int.from_bytes(buffer[offset + 2 : offset + 2 + count], "big")
    start = offset + 2 + count
    return tag, start, start + size


def pem(data: bytes, label: str) -> str:
    """PEM armour (RFC 7468) with 64-character lines."""
    text = base64.b64encode(data).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
