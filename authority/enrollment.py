"""EST enrollment (SPEC 12, RFC 7030): a device certifies its own key with its thing key, and
renews with the certificate it holds. Independent of HTTP: the edge hands over the credentials,
the presented certificate (DER) and the request body.

A re-enroll certificate is believed only when this CA's key signed it and it is, byte for byte,
the active record of its serial: a certificate of another CA, one that was revoked or replaced,
and an expired one are all refused with 403.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import pem
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from authority import context
from authority import errors as msg
from authority.errors import BadRequest, Forbidden, NotFound
from authority.identity import KeyType
from authority.requests import IssueRequest, device_key_spec
from authority.service import CertificateView, CertsService
from hsm.cms import certs_only
from hsm.csr import CertificationRequest, CsrError, UnsupportedCsrKey, load_base64_csr

ENROLL = "est_enroll"
REENROLL = "est_reenroll"
CERTIFICATE_REFUSED = "client certificate refused"


@dataclass(frozen=True)
class Enrolled:
    """A new certificate and the certs-only CMS (DER) that carries it to the device."""

    view: CertificateView
    pkcs7: bytes


def ca_certs(service: CertsService) -> bytes:
    """The CA chain as a certs-only SignedData (DER), for ``/cacerts``."""
    return certs_only([_der(block) for block in service.authority.ca_chain])


async def enroll(service: CertsService, key_type: KeyType, key: str, username: str,
                 body: bytes) -> Enrolled:
    """``/simpleenroll``: the thing of ``key`` gets a certificate for the CSR's key.

    A non-empty ``username`` (HTTP Basic) must be that thing's id: 403 otherwise.
    """
    thing_id = await service.identify_thing(key_type, key)
    if username and username != thing_id:
        raise Forbidden(msg.AUTHORIZATION_FAILED)
    request = _request(service, thing_id, body)
    view = await service.issue_for_thing(request, ENROLL)
    return Enrolled(view, _pkcs7(view))


async def reenroll(service: CertsService, presented: bytes, body: bytes) -> Enrolled:
    """``/simplereenroll``: the presented certificate (DER) is replaced by one for the CSR's
    key, issued to the same thing; the old one is revoked (superseded) in the same
    transaction."""
    serial = _issued_here(service, presented)
    try:
        record = await service.active_certificate(serial)
    except NotFound:
        raise Forbidden(CERTIFICATE_REFUSED) from None
    if _der(record.certificate_pem) != presented:
        raise Forbidden(CERTIFICATE_REFUSED)
    if record.expires_at <= datetime.now(UTC):
        raise Forbidden(CERTIFICATE_REFUSED)
    context.note(actor=context.thing_actor(record.thing_id))
    request = _request(service, record.thing_id, body)
    try:
        view = await service.replace_for_thing(record.serial, request, REENROLL)
    except NotFound:  # replaced or revoked meanwhile: a certificate is replaced once
        raise Forbidden(CERTIFICATE_REFUSED) from None
    return Enrolled(view, _pkcs7(view))


def _issued_here(service: CertsService, presented: bytes) -> str:
    """The serial (hex) of a certificate this CA's key signed; Forbidden otherwise."""
    try:
        certificate = x509.load_der_x509_certificate(presented)
        issuer = x509.load_der_x509_certificate(_der(service.authority.ca_chain[0]))
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise Forbidden(CERTIFICATE_REFUSED) from None
    return format(certificate.serial_number, "x")


def _request(service: CertsService, thing_id: str, body: bytes) -> IssueRequest:
    csr = _csr(body)
    spec = device_key_spec(csr)
    return IssueRequest(thing_id, spec.key_type, spec.key_bits, service.settings.hours_valid,
                        csr.key)


def _csr(body: bytes) -> CertificationRequest:
    try:
        return load_base64_csr(body)
    except UnsupportedCsrKey:
        raise BadRequest(msg.UNSUPPORTED_KEY_TYPE) from None
    except CsrError:
        raise BadRequest(msg.INVALID_CSR) from None


def _pkcs7(view: CertificateView) -> bytes:
    return certs_only([_der(view.certificate)])


def _der(certificate_pem: str) -> bytes:
    return pem.unarmor(certificate_pem.encode())[2]
