"""Client certificates (SPEC section 5) built from a template encoded once per CA.

Everything that is the same for every certificate of a CA (issuer name, algorithm identifier,
key usage, extended key usage, basic constraints, authority key identifier, CRL and OCSP
locations) is encoded with asn1crypto when the template is made; a certificate is then the
concatenation of those bytes with its serial, validity, subject, public key and key identifier.
"""

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from asn1crypto import x509

from hsm import der
from hsm.ca_key import CaSigner
from hsm.client_keys import ClientKey

CLOCK_SKEW = timedelta(seconds=60)
_VERSION_3 = bytes.fromhex("a003020102")
_COMMON_NAME_OID = bytes.fromhex("0603550403")
_SKI_OID = bytes.fromhex("0603551d0e")


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed client certificate together with the key it was issued for."""

    serial: int
    certificate_der: bytes
    certificate_pem: str
    private_key_pem: str = field(repr=False)
    key_type: str
    key_bits: int
    not_before: datetime
    not_after: datetime

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


def new_serial() -> int:
    """159 random bits: positive and at most 20 octets as RFC 5280 requires."""
    while True:
        serial = int.from_bytes(os.urandom(20), "big") >> 1
        if serial:
            return serial


def _extension(name: str, value: object, critical: bool) -> bytes:
    return x509.Extension({"extn_id": name, "critical": critical, "extn_value": value}).dump()


class CertificateTemplate:
    """Issues client certificates for one CA; safe to share between threads."""

    def __init__(
        self,
        ca_certificate: x509.Certificate,
        signer: CaSigner,
        crl_url: str | None = None,
        ocsp_url: str | None = None,
    ) -> None:
        self.ca_certificate = ca_certificate
        self.signer = signer
        self._algorithm = signer.scheme.algorithm_identifier
        self._issuer = ca_certificate.subject.dump()
        self._head = _VERSION_3
        ca_key_id = ca_certificate.key_identifier or ca_certificate.public_key.sha1
        tail = [
            _extension("extended_key_usage", ["client_auth"], False),
            _extension("basic_constraints", {"ca": False}, True),
        ]
        after_ski = [_extension("authority_key_identifier", {"key_identifier": ca_key_id}, False)]
        if crl_url:
            after_ski.append(_extension(
                "crl_distribution_points",
                [{"distribution_point": x509.DistributionPointName(
                    name="full_name", value=[x509.GeneralName(
                        name="uniform_resource_identifier", value=crl_url)])}],
                False,
            ))
        if ocsp_url:
            after_ski.append(_extension(
                "authority_information_access",
                [{"access_method": "ocsp", "access_location": x509.GeneralName(
                    name="uniform_resource_identifier", value=ocsp_url)}],
                False,
            ))
        usage = {
            "rsa": _extension("key_usage", {"digital_signature", "key_encipherment"}, True),
            "ec": _extension("key_usage", {"digital_signature"}, True),
        }
        self._before_ski = {kind: usage[kind] + b"".join(tail) for kind in usage}
        self._after_ski = b"".join(after_ski)

    def tbs_certificate(
        self, serial: int, subject_cn: str, key: ClientKey, not_before: datetime,
        not_after: datetime,
    ) -> bytes:
        """The DER TBSCertificate for one client key."""
        subject = der.tlv(der.SEQUENCE, der.tlv(der.SET, der.tlv(
            der.SEQUENCE, _COMMON_NAME_OID + der.tlv(der.UTF8_STRING, subject_cn.encode()))))
        ski = der.tlv(der.SEQUENCE, _SKI_OID + der.tlv(
            der.OCTET_STRING, der.tlv(der.OCTET_STRING, key.key_identifier)))
        extensions = der.tlv(der.SEQUENCE, self._before_ski[key.key_type] + ski + self._after_ski)
        return der.tlv(der.SEQUENCE, b"".join((
            self._head,
            der.integer(serial),
            self._algorithm,
            self._issuer,
            der.tlv(der.SEQUENCE, der.time(not_before) + der.time(not_after)),
            subject,
            key.public_key_info,
            der.tlv(0xA3, extensions),
        )))

    def issue(
        self, subject_cn: str, key: ClientKey, ttl: timedelta, now: datetime | None = None
    ) -> IssuedCertificate:
        """Sign a certificate for ``key`` in the HSM, valid from now minus the skew for ``ttl``."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        not_before = now - CLOCK_SKEW
        not_after = (now + ttl).replace(microsecond=0)
        serial = new_serial()
        tbs = self.tbs_certificate(serial, subject_cn, key, not_before, not_after)
        signature = self.signer.sign(tbs)
        certificate = der.tlv(
            der.SEQUENCE, tbs + self._algorithm + der.tlv(der.BIT_STRING, b"\x00" + signature)
        )
        return IssuedCertificate(
            serial=serial,
            certificate_der=certificate,
            certificate_pem=der.pem(certificate, "CERTIFICATE"),
            private_key_pem=key.private_key_pem,
            key_type=key.key_type,
            key_bits=key.key_bits,
            not_before=not_before,
            not_after=not_after,
        )
