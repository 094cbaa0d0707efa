"""OCSP responses (RFC 6960, SPEC section 13) signed in the HSM by the CA key.

Whether a certificate is good, revoked or unknown is the caller's to say (the store is the
source of truth); this module answers only for the CA it was made with, and assembles each
BasicOCSPResponse from parts encoded once, so that a response costs little more than its
signature. Requests are read by ``hsm.ocsp_request``.
"""

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from asn1crypto import algos, x509

from hsm import der
from hsm.ca_key import CaSigner
from hsm.crl import REASON_CODES
from hsm.ocsp_request import NONCE_OID, CertId, MalformedOcspRequest, OcspRequest, parse_request

# OCSPResponse carrying only a status (RFC 6960 section 4.2.1).
MALFORMED_REQUEST = bytes.fromhex("30030a0101")
INTERNAL_ERROR = bytes.fromhex("30030a0102")
TRY_LATER = bytes.fromhex("30030a0103")
UNAUTHORIZED = bytes.fromhex("30030a0106")

_SUCCESSFUL = bytes.fromhex("0a0100")
_BASIC_OID = bytes.fromhex("06092b0601050507300101")
_NONCE_OID = der.tlv(0x06, NONCE_OID)
_GOOD = bytes.fromhex("8000")
_UNKNOWN = bytes.fromhex("8200")
# CertID hash algorithms a request may use; each CA's hashes are computed once.
HASHES = ("sha1", "sha256", "sha384", "sha512")


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
