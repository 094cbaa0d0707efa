"""OCSP requests (RFC 6960 section 4.1): the CertIDs asked about and the nonce.

The request is walked with asn1crypto's tag-length-value parser rather than loaded as
``asn1crypto.ocsp.OCSPRequest``: the same structure is checked in a fifth of the time (a full
load costs as much as signing the response).
"""

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

from hsm.der_walk import (
    INTEGER,
    NULL,
    OCTET_STRING,
    OID,
    SEQUENCE,
    Element,
    children,
    encoding,
    expect,
    explicit,
    one,
)

MAX_REQUEST_BYTES = 65536
MAX_CERT_IDS = 64
NONCE_OID = bytes.fromhex("2b0601050507300102")  # id-pkix-ocsp-nonce, contents octets
_HASH_OIDS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}


class MalformedOcspRequest(ValueError):
    """The bytes are not a DER OCSPRequest with at least one CertID."""


@dataclass(frozen=True)
class CertId:
    """One requested certificate: the hash algorithm (``sha1``, ``sha256``, ``sha384``,
    ``sha512``, else the OID in hex), the issuer hashes, the serial and the CertID's DER."""

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


def parse_request(data: bytes) -> OcspRequest:
    """The CertIDs and nonce of a DER OCSPRequest; any signature on it is not checked."""
    if len(data) > MAX_REQUEST_BYTES:
        raise MalformedOcspRequest("the OCSP request is too large")
    try:
        tbs, *signature = children(one(data, SEQUENCE))
        if len(signature) > 1 or (signature and signature[0][:3] != explicit(0)):
            raise ValueError("unexpected field after tbsRequest")
        fields = children(expect(tbs, SEQUENCE))
        position = 0  # past the optional [0] version and [1] requestorName
        while position < len(fields) and fields[position][:3] in (explicit(0), explicit(1)):
            position += 1
        request_list = expect(fields[position], SEQUENCE)
        rest = fields[position + 1 :]
        if len(rest) > 1 or (rest and rest[0][:3] != explicit(2)):
            raise ValueError("unexpected field in tbsRequest")
        extensions = children(expect(_only(children(rest[0][4])), SEQUENCE)) if rest else []
        cert_ids = tuple(_cert_id(item) for item in children(request_list))
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


def _only(elements: list[Element]) -> Element:
    if len(elements) != 1:
        raise ValueError("one value expected")
    return elements[0]


def _cert_id(request: Element) -> CertId:
    cert_id, *extensions = children(expect(request, SEQUENCE))
    if len(extensions) > 1 or (extensions and extensions[0][:3] != explicit(0)):
        raise ValueError("unexpected field in Request")
    algorithm, name_hash, key_hash, serial = children(expect(cert_id, SEQUENCE))
    oid, *parameters = children(expect(algorithm, SEQUENCE))
    if parameters and (len(parameters) > 1 or parameters[0][:3] != NULL or parameters[0][4]):
        raise ValueError("hash parameters other than NULL")
    oid_bytes = expect(oid, OID)
    number = expect(serial, INTEGER)
    if not number:
        raise ValueError("empty serial number")
    return CertId(
        hash_algorithm=_HASH_OIDS.get(oid_bytes, oid_bytes.hex()),
        issuer_name_hash=expect(name_hash, OCTET_STRING),
        issuer_key_hash=expect(key_hash, OCTET_STRING),
        serial=int.from_bytes(number, "big", signed=True),
        der=encoding(cert_id),
    )


def _nonce(extensions: list[Element]) -> bytes | None:
    nonce = None
    for extension in extensions:
        oid, *_, value = children(expect(extension, SEQUENCE))
        if expect(oid, OID) == NONCE_OID:
            nonce = expect(value, OCTET_STRING)
    return nonce
