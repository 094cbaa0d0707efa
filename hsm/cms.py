"""Certs-only CMS SignedData (RFC 5652, "degenerate": no content, no signers), the way EST
(RFC 7030 sections 4.1.3 and 4.2.3) hands certificates to a device."""

from collections.abc import Sequence

from asn1crypto import cms, x509


def certs_only(certificates: Sequence[bytes]) -> bytes:
    """A DER ContentInfo of a SignedData holding the given DER certificates and nothing else.

    ``certificates`` is a SET OF: DER orders its members by their encodings, whatever order
    they are given in.
    """
    if not certificates:
        raise ValueError("a certs-only message needs at least one certificate")
    # X.690 11.6: compared as octet strings, the shorter padded with trailing zero octets.
    width = max(len(item) for item in certificates)
    ordered = sorted(certificates, key=lambda item: item.ljust(width, b"\x00"))
    choices = [cms.CertificateChoices(name="certificate", value=x509.Certificate.load(item))
               for item in ordered]
    signed = cms.SignedData({
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": "data"},
        "certificates": choices,
        "signer_infos": [],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()

