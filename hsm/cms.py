"""Certs-only CMS SignedData (RFC 5652, "degenerate": no content, no signers), the way EST
(RFC 7030 sections 4.1.3 and 4.2.3) hands certificates to a device.

The fixed fields are encoded once with asn1crypto; a message is those bytes around the
certificates (building the whole object graph per message costs more than signing one).
"""

from collections.abc import Sequence

from asn1crypto import cms

from hsm import der
from hsm.der_walk import SEQUENCE, one

_SIGNED_DATA = cms.ContentType("signed_data").dump()
_HEAD = (
    cms.CMSVersion("v1").dump()
    + cms.DigestAlgorithms([]).dump()
    + cms.EncapsulatedContentInfo({"content_type": "data"}).dump()
)
_SIGNER_INFOS = cms.SignerInfos([]).dump()
_CERTIFICATES_TAG = 0xA0  # certificates [0] IMPLICIT CertificateSet


def certs_only(certificates: Sequence[bytes]) -> bytes:
    """A DER ContentInfo of a SignedData holding the given DER certificates and nothing else.

    ``certificates`` is a SET OF: DER orders its members by their encodings, whatever order
    they are given in.
    """
    if not certificates:
        raise ValueError("a certs-only message needs at least one certificate")
    for item in certificates:
        one(item, SEQUENCE)  # ValueError unless one DER SEQUENCE
    # X.690 11.6: compared as octet strings, the shorter padded with trailing zero octets.
    width = max(len(item) for item in certificates)
    ordered = sorted(certificates, key=lambda item: item.ljust(width, b"\x00"))
    signed = der.tlv(der.SEQUENCE, _HEAD + der.tlv(_CERTIFICATES_TAG, b"".join(ordered))
                     + _SIGNER_INFOS)
    return der.tlv(der.SEQUENCE, _SIGNED_DATA + der.tlv(0xA0, signed))
