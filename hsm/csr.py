"""PKCS#10 certification requests (SPEC sections 3 and 12): what key they carry, and proof that
their maker holds its private half.

The request's subject, attributes and requested extensions are not read: the certificate gets
the profile of section 5 whatever the request asks for.
"""

import base64
import binascii
from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from asn1crypto import pem as asn1_pem
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from hsm.client_keys import ClientKey
from hsm.public_key import UnsupportedKey, public_key_only


class CsrError(ValueError):
    """Base of the errors of this module."""


class InvalidCsr(CsrError):
    """Not a PKCS#10 request, or its signature does not verify with its own key."""


class UnsupportedCsrKey(CsrError):
    """The request's key is not RSA or EC on a named curve this CA certifies."""


@dataclass(frozen=True)
class CertificationRequest:
    """A verified request: its key's type and size, and its SubjectPublicKeyInfo (DER)."""

    key_type: str
    key_bits: int
    public_key_info: bytes

    @property
    def key(self) -> ClientKey:
        """The key to certify: a ``ClientKey`` with no private key (``private_key_pem`` "")."""
        return ClientKey(self.key_type, self.key_bits, "", self.public_key_info)


def load_pem_csr(text: str | bytes) -> CertificationRequest:
    """A PEM ``CERTIFICATE REQUEST`` (also ``NEW CERTIFICATE REQUEST``), checked."""
    data = text.encode() if isinstance(text, str) else text
    try:
        if not asn1_pem.detect(data):
            raise InvalidCsr("not a PEM certification request")
        label, _, der = asn1_pem.unarmor(data.strip())
    except (ValueError, TypeError) as exc:
        raise InvalidCsr("not a PEM certification request") from exc
    if label not in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        raise InvalidCsr("not a PEM certification request")
    return load_der_csr(der)


def load_base64_csr(body: bytes | str) -> CertificationRequest:
    """An EST request body (RFC 7030 section 4.2.1): base64 of the DER request, line breaks
    allowed."""
    data = body.encode() if isinstance(body, str) else body
    try:
        der = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCsr("not a base64 certification request") from exc
    return load_der_csr(der)


def load_der_csr(der: bytes) -> CertificationRequest:
    """A DER PKCS#10 request: parsed, its key classified, then its signature verified."""
    try:
        request = x509.load_der_x509_csr(der)
        spki = asn1_csr.CertificationRequest.load(der)["certification_request_info"][
            "subject_pk_info"]
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidCsr("not a certification request") from exc
    try:
        key = public_key_only(spki)
    except UnsupportedKey as exc:
        raise UnsupportedCsrKey(str(exc)) from exc
    try:
        valid = request.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise InvalidCsr("the request's signature cannot be verified") from exc
    if not valid:
        raise InvalidCsr("the request's signature does not verify")
    return CertificationRequest(key.key_type, key.key_bits, key.public_key_info)
