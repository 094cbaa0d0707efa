"""PKCS#10 certification requests (SPEC sections 3 and 12): what key they carry, and proof that
their maker holds its private half.

The request's subject, attributes and requested extensions are not read: the certificate gets
the profile of section 5 whatever the request asks for.
"""

import base64
import binascii
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from hsm.client_keys import ClientKey
from hsm.der_walk import SEQUENCE, children, encoding, expect, one
from hsm.public_key import UnsupportedKey, public_key_only

# cryptography does not verify these (is_signature_valid is False); say why instead.
_REFUSED_DIGESTS = ("md5", "sha1")


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
        request = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise InvalidCsr("not a PEM certification request") from exc
    return _checked(request, request.public_bytes(Encoding.DER))


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
    """A DER PKCS#10 request, checked."""
    try:
        request = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise InvalidCsr("not a certification request") from exc
    return _checked(request, der)


def _checked(request: x509.CertificateSigningRequest, der: bytes) -> CertificationRequest:
    """Classify the key, then verify the signature with it (proof of possession)."""
    try:
        key = public_key_only(_public_key_info(der))
    except UnsupportedKey as exc:
        raise UnsupportedCsrKey(str(exc)) from exc
    try:
        digest = request.signature_hash_algorithm
        valid = request.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise InvalidCsr("the request's signature cannot be verified") from exc
    if digest is not None and digest.name in _REFUSED_DIGESTS:
        raise InvalidCsr(f"the request is signed with {digest.name.upper()}, not accepted")
    if not valid:
        raise InvalidCsr("the request's signature does not verify")
    return CertificationRequest(key.key_type, key.key_bits, key.public_key_info)


def _public_key_info(der: bytes) -> bytes:
    """The SubjectPublicKeyInfo DER, as the request encodes it: the third field of
    certificationRequestInfo, the first field of the request (RFC 2986)."""
    try:
        info = children(one(der, SEQUENCE))[0]
        return encoding(children(expect(info, SEQUENCE))[2])
    except (ValueError, IndexError) as exc:
        raise InvalidCsr("not a certification request") from exc
