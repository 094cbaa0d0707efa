"""OCSP (RFC 6960, SPEC section 13): requests parsed with asn1crypto, responses signed in the HSM.

Whether a certificate is good, revoked or unknown is the caller's to say (the store is the
source of truth); this module answers only for the CA it was made with, and assembles each
BasicOCSPResponse from parts encoded once, so that a response costs little more than its
signature.
"""

import base64
import binascii
import hashlib
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from asn1crypto import algos, parser, x509

from hsm import der
from hsm.ca_key import CaSigner
from hsm.crl import REASON_CODES

# OCSPResponse carrying only a status (RFC 6960 section 4.2.1).
MALFORMED_REQUEST = bytes.fromhex("30030a0101")
INTERNAL_ERROR = bytes.fromhex("30030a0102")
TRY_LATER = bytes.fromhex("30030a0103")
UNAUTHORIZED = bytes.fromhex("30030a0106")

_SUCCESSFUL = bytes.fromhex("0a0100")
_BASIC_OID = bytes.fromhex("06092b0601050507300101")
_NONCE_OID = bytes.fromhex("06092b0601050507300102")
_GOOD = bytes.fromhex("8000")
_UNKNOWN = bytes.fromhex("8200")

# (class, method, tag, header, contents) of one parsed value.
_Element = tuple[int, int, int, bytes, bytes]
_UNIVERSAL, _CONTEXT, _CONSTRUCTED, _PRIMITIVE = 0, 2, 1, 0
_SEQ = (_UNIVERSAL, _CONSTRUCTED, 16)
_TAGGED = tuple((_CONTEXT, _CONSTRUCTED, number) for number in range(3))  # [0], [1], [2] EXPLICIT
_OCTET_STRING = (_UNIVERSAL, _PRIMITIVE, 4)
_INTEGER = (_UNIVERSAL, _PRIMITIVE, 2)
_OID = (_UNIVERSAL, _PRIMITIVE, 6)
_NULL = (_UNIVERSAL, _PRIMITIVE, 5)
_HASH_OIDS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
MAX_REQUEST_BYTES = 65536
MAX_CERT_IDS = 64

# CertID hash algorithms a request may use; each CA's hashes are computed once.
HASHES = ("sha1", "sha256", "sha384", "sha512")


class MalformedOcspRequest(ValueError):
    """The bytes are not a DER OCSPRequest with at least one CertID."""


@dataclass(frozen=True)
class CertId:
    """One requested certificate: the hash algorithm, the issuer hashes and the serial."""

    hash_algorithm: str
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial: int
    der: bytes


@dataclass(frozen=True)
class OcspRequest:
    """The CertIDs of a request, in order, and its nonce (the extension value's contents)."""

    cert_ids: tuple[CertId, ...]
    nonce: bytes | None


@dataclass(frozen=True)
class CertStatus:
    """What the store says of one serial."""

    state: Literal["good", "revoked", "unknown"]
    revoked_at: datetime | None = None
    reason: str | None = None


GOOD = CertStatus("good")
UNKNOWN = CertStatus("unknown")


def revoked(revoked_at: datetime, reason: str | None = None) -> CertStatus:
    """The status of a revoked certificate; ``reason`` as in ``hsm.crl.REASON_CODES``."""
    if reason is not None and reason not in REASON_CODES:
        raise ValueError(f"unknown revocation reason {reason!r}")
    return CertStatus("revoked", revoked_at, reason)


def parse_request(data: bytes) -> OcspRequest:
    """The CertIDs and nonce of a DER OCSPRequest; any signature on it is not checked.

    The request is walked with asn1crypto's tag-length-value parser rather than loaded as
    ``asn1crypto.ocsp.OCSPRequest``: the same checks of structure, in a tenth of the time (a
    full load costs as much as the signature of the response).
    """
    if len(data) > MAX_REQUEST_BYTES:
        raise MalformedOcspRequest("the OCSP request is too large")
    try:
        tbs, *signature = _children(_one(data, _SEQ))
        if len(signature) > 1 or (signature and signature[0][:3] != _TAGGED[0]):
            raise ValueError("unexpected field after tbsRequest")
        fields = _children(_expect(tbs, _SEQ))
        position = 0  # past the optional [0] version and [1] requestorName
        while position < len(fields) and fields[position][:3] in _TAGGED[:2]:
            position += 1
        request_list = _expect(fields[position], _SEQ)
        rest = fields[position + 1 :]
        if len(rest) > 1 or (rest and rest[0][:3] != _TAGGED[2]):
            raise ValueError("unexpected field in tbsRequest")
        extensions = _children(_expect(_only(_children(rest[0][4])), _SEQ)) if rest else []
        cert_ids = tuple(_cert_id(item) for item in _children(request_list))
        nonce = _nonce(extensions)
    except (ValueError, TypeError, IndexError) as exc:
        raise MalformedOcspRequest("not an OCSP request") from exc
    if not cert_ids:
        raise MalformedOcspRequest("an OCSP request without a certificate")
    if len(cert_ids) > MAX_CERT_IDS:
        raise MalformedOcspRequest("too many certificates in one OCSP request")
    return OcspRequest(cert_ids, nonce)


def decode_get_request(path: str) -> bytes:
    """The DER request of ``GET /ocsp/{path}`` (RFC 6960 appendix A.1): the URL-encoded
    base64 of the request; clients differ in what they escape, so "%2F", "%2B", "%3D", "/"
    and "+" are all read, and missing padding is restored."""
    text = urllib.parse.unquote(path).strip()
    if len(text) > MAX_REQUEST_BYTES * 2:
        raise MalformedOcspRequest("the OCSP request is too large")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedOcspRequest("not base64") from exc


def _children(contents: bytes) -> list[_Element]:
    found: list[_Element] = []
    offset = 0
    while offset < len(contents):
        cls, method, tag, header, body, trailer = parser.parse(contents[offset:])
        if trailer:
            raise ValueError("indefinite length is not DER")
        found.append((cls, method, tag, header, body))
        offset += len(header) + len(body)
    return found


def _one(data: bytes, kind: tuple[int, int, int]) -> bytes:
    cls, method, tag, _, body, trailer = parser.parse(data, strict=True)
    if (cls, method, tag) != kind or trailer:
        raise ValueError("unexpected value")
    return body


def _expect(element: _Element, kind: tuple[int, int, int]) -> bytes:
    if element[:3] != kind:
        raise ValueError("unexpected value")
    return element[4]


def _only(elements: list[_Element]) -> _Element:
    if len(elements) != 1:
        raise ValueError("one value expected")
    return elements[0]


def _cert_id(request: _Element) -> CertId:
    cert_id, *extensions = _children(_expect(request, _SEQ))
    if len(extensions) > 1 or (extensions and extensions[0][:3] != (_CONTEXT, _CONSTRUCTED, 0)):
        raise ValueError("unexpected field in Request")
    algorithm, name_hash, key_hash, serial = _children(_expect(cert_id, _SEQ))
    oid, *parameters = _children(_expect(algorithm, _SEQ))
    if parameters and (len(parameters) > 1 or parameters[0][:3] != _NULL or parameters[0][4]):
        raise ValueError("hash parameters other than NULL")
    oid_bytes = _expect(oid, _OID)
    number = _expect(serial, _INTEGER)
    if not number:
        raise ValueError("empty serial number")
    return CertId(
        hash_algorithm=_HASH_OIDS.get(oid_bytes, oid_bytes.hex()),
        issuer_name_hash=_expect(name_hash, _OCTET_STRING),
        issuer_key_hash=_expect(key_hash, _OCTET_STRING),
        serial=int.from_bytes(number, "big", signed=True),
        der=cert_id[3] + cert_id[4],
    )


def _nonce(extensions: list[_Element]) -> bytes | None:
    nonce = None
    for extension in extensions:
        oid, *_, value = _children(_expect(extension, _SEQ))
        if _expect(oid, _OID) == _NONCE_OID[2:]:
            nonce = _expect(value, _OCTET_STRING)
    return nonce


def generalized_time(moment: datetime) -> bytes:
    """GeneralizedTime in UTC to the second, as RFC 5280 and RFC 6960 encode it."""
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return b"\x18\x0f%04d%02d%02d%02d%02d%02dZ" % (
        m.year, m.month, m.day, m.hour, m.minute, m.second)


def sha256_signer(signer: CaSigner) -> CaSigner:
    """The CA signer with SHA-256 as the digest (SPEC 13: SHA-256 whatever the curve).

    The token signs a digest computed here (``CKM_ECDSA``), so a P-384 CA signs SHA-256
    digests as readily as SHA-384 ones; RSA CAs already sign with SHA-256.
    """
    scheme = signer.scheme
    if scheme.hash_name == "sha256" or not scheme.name.endswith("_ecdsa"):
        return signer
    identifier = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}).dump()
    return replace(signer, scheme=replace(
        scheme, name="sha256_ecdsa", algorithm_identifier=identifier, hash_name="sha256"))


class OcspResponder:
    """Answers OCSP requests about the certificates of one CA; safe to share between threads."""

    def __init__(self, ca_certificate: x509.Certificate, signer: CaSigner) -> None:
        self.signer = sha256_signer(signer)
        self._algorithm = self.signer.scheme.algorithm_identifier
        name = ca_certificate.subject.dump()
        key_bits = ca_certificate.public_key["public_key"].contents[1:]
        self._issuer = {
            algorithm: (hashlib.new(algorithm, name).digest(),
                        hashlib.new(algorithm, key_bits).digest())
            for algorithm in HASHES
        }
        self._responder_id = der.tlv(0xA2, der.tlv(der.OCTET_STRING,
                                                   hashlib.sha1(key_bits).digest()))

    def issued_here(self, cert_id: CertId) -> bool:
        """Whether ``cert_id`` names this CA as the issuer (hashes with its own algorithm)."""
        expected = self._issuer.get(cert_id.hash_algorithm)
        return expected == (cert_id.issuer_name_hash, cert_id.issuer_key_hash)

    def serves(self, request: OcspRequest) -> bool:
        """Whether every CertID of ``request`` is about this CA (else: ``UNAUTHORIZED``)."""
        return all(self.issued_here(cert_id) for cert_id in request.cert_ids)

    def response_data(
        self, request: OcspRequest, statuses: Sequence[CertStatus], now: datetime,
        validity: timedelta,
    ) -> bytes:
        """The DER ResponseData: one SingleResponse per CertID, in the request's order."""
        if len(statuses) != len(request.cert_ids):
            raise ValueError("one status per requested certificate")
        now = now.astimezone(UTC).replace(microsecond=0)
        update = generalized_time(now) + der.tlv(0xA0, generalized_time(now + validity))
        singles = b"".join(
            der.tlv(der.SEQUENCE, cert_id.der + _status(status) + update)
            for cert_id, status in zip(request.cert_ids, statuses, strict=True)
        )
        parts = [self._responder_id, generalized_time(now), der.tlv(der.SEQUENCE, singles)]
        if request.nonce is not None:
            nonce = der.tlv(der.SEQUENCE, _NONCE_OID + der.tlv(der.OCTET_STRING, request.nonce))
            parts.append(der.tlv(0xA1, der.tlv(der.SEQUENCE, nonce)))
        return der.tlv(der.SEQUENCE, b"".join(parts))

    def sign_response(
        self, request: OcspRequest, statuses: Sequence[CertStatus], now: datetime,
        validity: timedelta,
    ) -> bytes:
        """The DER OCSPResponse (successful, BasicOCSPResponse signed in the HSM, no certs)."""
        tbs = self.response_data(request, statuses, now, validity)
        signature = self.signer.sign(tbs)
        basic = der.tlv(der.SEQUENCE, tbs + self._algorithm
                        + der.tlv(der.BIT_STRING, b"\x00" + signature))
        response_bytes = der.tlv(der.SEQUENCE, _BASIC_OID + der.tlv(der.OCTET_STRING, basic))
        return der.tlv(der.SEQUENCE, _SUCCESSFUL + der.tlv(0xA0, response_bytes))

    def respond(
        self, request_der: bytes, status_of: Callable[[int], CertStatus],
        validity: timedelta, now: datetime | None = None,
    ) -> bytes:
        """The whole exchange: malformedRequest, unauthorized or a signed response."""
        try:
            request = parse_request(request_der)
        except MalformedOcspRequest:
            return MALFORMED_REQUEST
        if not self.serves(request):
            return UNAUTHORIZED
        statuses = [status_of(cert_id.serial) for cert_id in request.cert_ids]
        return self.sign_response(request, statuses, now or datetime.now(UTC), validity)


def _status(status: CertStatus) -> bytes:
    if status.state == "good":
        return _GOOD
    if status.state == "unknown":
        return _UNKNOWN
    if status.revoked_at is None:
        raise ValueError("a revoked status needs its revocation time")
    body = generalized_time(status.revoked_at)
    code = REASON_CODES[status.reason] if status.reason else 0
    # As in the CRL (RFC 5280 5.3.1), "unspecified" is left out rather than stated.
    if code:
        body += bytes((0xA0, 3, 0x0A, 1, code))
    return der.tlv(0xA1, body)
