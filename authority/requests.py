"""Checking what a client asked for: the issue body and the list query (SPEC section 3)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authority import key_policy
from authority.durations import parse_ttl
from authority.errors import (
    INVALID_CSR,
    INVALID_KEY_BITS,
    INVALID_LIMIT,
    INVALID_QUERY,
    INVALID_TTL,
    MALFORMED,
    MISSING_CERT_DATA,
    MISSING_THING_ID,
    UNSUPPORTED_KEY_TYPE,
    BadRequest,
)
from hsm.client_keys import ClientKey
from hsm.csr import CertificationRequest, CsrError, UnsupportedCsrKey, load_pem_csr

MAX_LIMIT = 200
MAX_OFFSET = 2**63 - 1
# Every value is bounded before it is used: no lifetime reaches past 1,000 years (the CA's
# notAfter refuses far less), no filter is longer than a serial.
MAX_TTL_HOURS = 1000 * 8766
MAX_TTL = timedelta(hours=MAX_TTL_HOURS)
MAX_TTL_TEXT = 64
MAX_SERIAL_FILTER = 64
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class IssueRequest:
    thing_id: str
    key_type: str
    key_bits: int
    ttl: timedelta
    # The device's own public key (from its CSR, proof of possession checked, or from the
    # certificate a renewal replaces): certified as it is, no key generated.
    device_key: ClientKey | None = None


@dataclass(frozen=True)
class ListQuery:
    offset: int = 0
    limit: int = 10
    serial: str | None = None
    expires_from: datetime | None = None
    expires_to: datetime | None = None


def issue_request(body: Any, default_ttl: timedelta, default_rsa_bits: int) -> IssueRequest:
    """The issue/rotate body checked and completed with defaults; BadRequest otherwise."""
    if not isinstance(body, dict):
        raise BadRequest(MALFORMED)
    thing_id = body.get("thing_id")
    if thing_id is None or thing_id == "":
        raise BadRequest(MISSING_THING_ID)
    if not isinstance(thing_id, str):
        raise BadRequest(MALFORMED)
    csr = _csr(body.get("csr"))
    if csr is None:
        key_type = _key_type(body.get("key_type"))
        key_bits = _key_bits(body.get("key_bits"), key_type, default_rsa_bits)
        return IssueRequest(thing_id, key_type, key_bits, _ttl(body.get("ttl"), default_ttl))
    spec = device_key_spec(csr)
    if body.get("key_type") is not None and _key_type(body["key_type"]) != spec.key_type:
        raise BadRequest(UNSUPPORTED_KEY_TYPE)
    if body.get("key_bits") not in (None, 0) and \
            _key_bits(body["key_bits"], spec.key_type, default_rsa_bits) != spec.key_bits:
        raise BadRequest(INVALID_KEY_BITS)
    return IssueRequest(thing_id, spec.key_type, spec.key_bits,
                        _ttl(body.get("ttl"), default_ttl), csr.key)


def device_key_spec(csr: CertificationRequest) -> key_policy.KeySpec:
    """The CSR's key checked against the device-key policy; BadRequest naming the field."""
    try:
        return key_policy.device_key(csr.key_type, csr.key_bits)
    except key_policy.KeyPolicyError as exc:
        raise BadRequest(UNSUPPORTED_KEY_TYPE if exc.field == "key_type"
                         else INVALID_KEY_BITS) from None


def _csr(raw: Any) -> CertificationRequest | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise BadRequest(INVALID_CSR)
    try:
        return load_pem_csr(raw)
    except UnsupportedCsrKey:
        raise BadRequest(UNSUPPORTED_KEY_TYPE) from None
    except CsrError:
        raise BadRequest(INVALID_CSR) from None


def _key_type(raw: Any) -> str:
    if raw is None:
        return "rsa"
    if raw == "":
        raise BadRequest(MISSING_CERT_DATA)
    if not isinstance(raw, str):
        raise BadRequest(UNSUPPORTED_KEY_TYPE)
    try:
        return key_policy.key_type_of(raw)
    except key_policy.KeyPolicyError:
        raise BadRequest(UNSUPPORTED_KEY_TYPE) from None


def _key_bits(raw: Any, key_type: str, default_rsa_bits: int) -> int:
    if raw is None or raw == 0:
        return key_policy.default_bits(key_type, default_rsa_bits)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise BadRequest(INVALID_KEY_BITS)
    try:
        return key_policy.generated_key(key_type, raw).key_bits
    except key_policy.KeyPolicyError:
        raise BadRequest(INVALID_KEY_BITS) from None


def _ttl(raw: Any, default: timedelta) -> timedelta:
    if raw is None:
        return default
    if raw == "":
        raise BadRequest(MISSING_CERT_DATA)
    if isinstance(raw, bool):
        raise BadRequest(INVALID_TTL)
    if isinstance(raw, int) and not 0 < raw <= MAX_TTL_HOURS:
        raise BadRequest(INVALID_TTL)
    if not isinstance(raw, int | str) or len(str(raw)) > MAX_TTL_TEXT:
        raise BadRequest(INVALID_TTL)
    try:
        ttl = timedelta(hours=raw) if isinstance(raw, int) else parse_ttl(raw)
    except (ValueError, OverflowError):
        raise BadRequest(INVALID_TTL) from None
    if not timedelta(0) < ttl <= MAX_TTL:
        raise BadRequest(INVALID_TTL)
    return ttl


def list_query(params: dict[str, str]) -> ListQuery:
    """offset, limit, serial, from and to from the query string; BadRequest otherwise."""
    if any(len(value) > MAX_TTL_TEXT and name != "serial" for name, value in params.items()):
        raise BadRequest(INVALID_QUERY)
    try:
        offset = int(params.get("offset", "0") or 0)
        limit = int(params.get("limit", "10") or 10)
        expires_from = _moment(params.get("from"))
        expires_to = _moment(params.get("to"))
    except (ValueError, OverflowError):
        raise BadRequest(INVALID_QUERY) from None
    if offset < 0 or offset > MAX_OFFSET or limit < 1:
        raise BadRequest(INVALID_QUERY)
    if limit > MAX_LIMIT:
        raise BadRequest(INVALID_LIMIT)
    serial = params.get("serial") or None
    if serial is not None and (len(serial) > MAX_SERIAL_FILTER or not serial.isprintable()):
        raise BadRequest(INVALID_QUERY)
    return ListQuery(offset, limit, serial, expires_from, expires_to)


def _moment(raw: str | None) -> datetime | None:
    if not raw:
        return None
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamps need a time zone")
    if not _EARLIEST <= moment <= _LATEST:
        raise ValueError("timestamp out of range")
    return moment.astimezone(UTC)
