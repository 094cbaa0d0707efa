"""Certificate revocation lists (SPEC section 7) assembled from pre-encoded entries.

A CRL of a million entries is about 53 MB of DER; building it as asn1crypto objects takes
minutes, so each entry is encoded once (``revoked_entry``) and the list is concatenated.
"""

from collections.abc import Iterable
from datetime import UTC, datetime

from asn1crypto import core, crl, x509

from hsm import der
from hsm.ca_key import CaSigner

_VERSION_2 = bytes.fromhex("020101")
_REASON_OID = bytes.fromhex("0603551d15")
REASON_CODES = {
    "unspecified": 0, "key_compromise": 1, "ca_compromise": 2, "affiliation_changed": 3,
    "superseded": 4, "cessation_of_operation": 5, "certificate_hold": 6,
    "remove_from_crl": 8, "privilege_withdrawn": 9, "aa_compromise": 10,
}
# RFC 5280 5.3.1: the reason code "unspecified" SHOULD be absent.
_REASON_EXTENSIONS = {
    name: der.tlv(der.SEQUENCE, der.tlv(der.SEQUENCE, _REASON_OID + der.tlv(
        der.OCTET_STRING, der.tlv(0x0A, bytes((code,))))))
    for name, code in REASON_CODES.items() if code
}


def revoked_entry(serial: int, revoked_at: datetime, reason: str | None = None) -> bytes:
    """One revokedCertificates entry: serial, revocation date and the reason when known.

    This runs once per revoked certificate for every CRL a process builds first, so it avoids
    the general helpers' overhead; the output is the same DER.
    """
    number = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    body = b"\x02" + der.length(len(number)) + number + der.time(revoked_at)
    if reason:
        extension = _REASON_EXTENSIONS.get(reason)
        if extension is None and reason not in REASON_CODES:
            raise ValueError(f"unknown revocation reason {reason!r}")
        body += extension or b""
    size = len(body)
    return (b"\x30" + bytes((size,)) if size < 0x80 else b"\x30" + der.length(size)) + body


class CrlTemplate:
    """Builds and signs CRLs for one CA; safe to share between threads."""

    def __init__(self, ca_certificate: x509.Certificate, signer: CaSigner) -> None:
        self.signer = signer
        self._algorithm = signer.scheme.algorithm_identifier
        self._issuer = ca_certificate.subject.dump()
        ca_key_id = ca_certificate.key_identifier or ca_certificate.public_key.sha1
        self._authority_key_id = crl.TBSCertListExtension({
            "extn_id": "authority_key_identifier",
            "critical": False,
            "extn_value": {"key_identifier": ca_key_id},
        }).dump()

    def _extensions(self, number: int) -> bytes:
        crl_number = crl.TBSCertListExtension({
            "extn_id": "crl_number", "critical": False, "extn_value": core.Integer(number),
        }).dump()
        return der.tlv(0xA0, der.tlv(der.SEQUENCE, self._authority_key_id + crl_number))

    def build(
        self, entries: Iterable[bytes], number: int, this_update: datetime,
        next_update: datetime,
    ) -> bytes:
        """The signed DER CRL listing ``entries`` (from ``revoked_entry``)."""
        revoked = b"".join(entries)
        parts = [
            _VERSION_2, self._algorithm, self._issuer,
            der.time(this_update.astimezone(UTC)), der.time(next_update.astimezone(UTC)),
        ]
        if revoked:
            parts.append(der.tlv(der.SEQUENCE, revoked))
        parts.append(self._extensions(number))
        tbs = der.tlv(der.SEQUENCE, b"".join(parts))
        signature = self.signer.sign(tbs)
        return der.tlv(
            der.SEQUENCE, tbs + self._algorithm + der.tlv(der.BIT_STRING, b"\x00" + signature)
        )
