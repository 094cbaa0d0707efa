"""The hand-assembled TBSCertificate DER is byte-identical to what two DER libraries produce.

``CertificateTemplate.tbs_certificate`` concatenates pre-encoded pieces; here the same
certificate is built field by field with asn1crypto's ``x509.TbsCertificate`` classes and,
independently, with cryptography's ``CertificateBuilder`` (its TBS bytes, signed by a throwaway
software key of the CA's algorithm), and the bytes must be equal.
"""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asn1crypto import algos, core, keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hsm.authority import CertificateAuthority
from hsm.certificate import CertificateTemplate
from hsm.client_keys import ClientKey
from tests.hsm.helpers import CA_TYPES, type_id

CRL_URL = "http://localhost:8204/crl"
OCSP_URL = "http://ocsp.example.test/"
ALGORITHMS = {
    "rsa": algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa", "parameters": core.Null()}),
    256: algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
    384: algos.SignedDigestAlgorithm({"algorithm": "sha384_ecdsa"}),
}
NOW = datetime.now(UTC).replace(microsecond=0)
VALIDITIES = {
    "now": (NOW - timedelta(seconds=60), NOW + timedelta(days=90)),
    "after-2049": (NOW - timedelta(seconds=60), datetime(2061, 7, 8, 9, 10, 11, tzinfo=UTC)),
    "both-after-2049": (datetime(2050, 1, 1, tzinfo=UTC), datetime(2099, 12, 31, tzinfo=UTC)),
}


def _algorithm(ca_type: tuple[str, int]) -> algos.SignedDigestAlgorithm:
    return ALGORITHMS["rsa"] if ca_type[0] == "rsa" else ALGORITHMS[ca_type[1]]


def _time(moment: datetime) -> asn1_x509.Time:
    name = "utc_time" if moment.year < 2050 else "general_time"
    return asn1_x509.Time(name=name, value=moment)


def _ca_key_id(ca: CertificateAuthority) -> bytes:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    digest: bytes = ca_cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    return digest


def _asn1crypto_tbs(
    ca: CertificateAuthority, ca_type: tuple[str, int], serial: int, cn: str, key: ClientKey,
    not_before: datetime, not_after: datetime, crl_url: str | None, ocsp_url: str | None,
) -> bytes:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    public = serialization.load_der_public_key(key.public_key_info)
    usage = {"digital_signature"} | ({"key_encipherment"} if key.key_type == "rsa" else set())
    extensions: list[dict[str, Any]] = [
        {"extn_id": "key_usage", "critical": True, "extn_value": usage},
        {"extn_id": "extended_key_usage", "critical": False, "extn_value": ["client_auth"]},
        {"extn_id": "basic_constraints", "critical": True, "extn_value": {"ca": False}},
        {"extn_id": "key_identifier", "critical": False,
         "extn_value": x509.SubjectKeyIdentifier.from_public_key(public).digest},
        {"extn_id": "authority_key_identifier", "critical": False,
         "extn_value": {"key_identifier": _ca_key_id(ca)}},
    ]
    if crl_url:
        extensions.append({
            "extn_id": "crl_distribution_points", "critical": False,
            "extn_value": [{"distribution_point": asn1_x509.DistributionPointName(
                name="full_name", value=[asn1_x509.GeneralName(
                    name="uniform_resource_identifier", value=crl_url)])}],
        })
    if ocsp_url:
        extensions.append({
            "extn_id": "authority_information_access", "critical": False,
            "extn_value": [{"access_method": "ocsp",
                            "access_location": asn1_x509.GeneralName(
                                name="uniform_resource_identifier", value=ocsp_url)}],
        })
    tbs = asn1_x509.TbsCertificate({
        "version": "v3",
        "serial_number": serial,
        "signature": _algorithm(ca_type),
        "issuer": asn1_x509.Name.load(ca_cert.subject.public_bytes()),
        "validity": {"not_before": _time(not_before), "not_after": _time(not_after)},
        "subject": asn1_x509.Name.build({"common_name": cn}),
        "subject_public_key_info": keys.PublicKeyInfo.load(
            public.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)),
        "extensions": extensions,
    })
    return tbs.dump(force=True)


@pytest.mark.parametrize("validity", list(VALIDITIES), ids=str)
@pytest.mark.parametrize("client_type", [("ec", 256), ("rsa", 2048), ("ec", 521)], ids=type_id)
@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_tbs_matches_asn1crypto(
    make_ca: Callable[[str, int], CertificateAuthority],
    client_key: Callable[[str, int], ClientKey],
    ca_type: tuple[str, int], client_type: tuple[str, int], validity: str,
) -> None:
    ca = make_ca(*ca_type)
    key = client_key(*client_type)
    not_before, not_after = VALIDITIES[validity]
    serial = int.from_bytes(uuid.uuid4().bytes, "big")
    cn = str(uuid.uuid4())
    ours = ca.certificates.tbs_certificate(serial, cn, key, not_before, not_after)
    theirs = _asn1crypto_tbs(ca, ca_type, serial, cn, key, not_before, not_after, CRL_URL, None)
    assert ours.hex() == theirs.hex()


@pytest.mark.parametrize(
    "serial",
    [1, 0x7F, 0x80, 0xFF, 0x100, 0x8000, 2**152, 2**159 - 1],
    ids=lambda s: f"serial-{s:x}",
)
@pytest.mark.parametrize(
    "cn",
    ["t", "x" * 127, "y" * 130, "thing-ü-雪", str(uuid.UUID(int=0))],
    ids=["1-char", "127-chars", "130-chars", "non-ascii", "uuid"],
)
def test_tbs_edge_values_match_asn1crypto(
    authority: CertificateAuthority, client_key: Callable[[str, int], ClientKey], serial: int,
    cn: str,
) -> None:
    key = client_key("ec", 256)
    not_before, not_after = VALIDITIES["now"]
    ours = authority.certificates.tbs_certificate(serial, cn, key, not_before, not_after)
    theirs = _asn1crypto_tbs(authority, ("ec", 256), serial, cn, key, not_before, not_after,
                             CRL_URL, None)
    assert ours.hex() == theirs.hex()


@pytest.mark.parametrize(
    ("crl_url", "ocsp_url"),
    [(None, None), (None, OCSP_URL), (CRL_URL, OCSP_URL)],
    ids=["no-urls", "ocsp-only", "crl-and-ocsp"],
)
def test_tbs_optional_locations_match_asn1crypto(
    authority: CertificateAuthority, client_key: Callable[[str, int], ClientKey],
    crl_url: str | None, ocsp_url: str | None,
) -> None:
    template = CertificateTemplate(authority.ca_certificate, authority.signer, crl_url, ocsp_url)
    key = client_key("rsa", 2048)
    not_before, not_after = VALIDITIES["now"]
    ours = template.tbs_certificate(12345, "thing", key, not_before, not_after)
    theirs = _asn1crypto_tbs(authority, ("ec", 256), 12345, "thing", key, not_before,
                             not_after, crl_url, ocsp_url)
    assert ours.hex() == theirs.hex()


_SOFTWARE_KEYS: dict[str, Any] = {}


def _software_key(ca_type: tuple[str, int]) -> tuple[Any, hashes.HashAlgorithm]:
    """A throwaway key with the same signature AlgorithmIdentifier as the CA's."""
    if ca_type[0] == "rsa":
        if "rsa" not in _SOFTWARE_KEYS:
            _SOFTWARE_KEYS["rsa"] = rsa.generate_private_key(65537, 2048)
        return _SOFTWARE_KEYS["rsa"], hashes.SHA256()
    curve = {256: ec.SECP256R1(), 384: ec.SECP384R1()}[ca_type[1]]
    return ec.generate_private_key(curve), {256: hashes.SHA256(), 384: hashes.SHA384()}[
        ca_type[1]]


@pytest.mark.parametrize("validity", ["now", "after-2049"], ids=str)
@pytest.mark.parametrize("client_type", [("ec", 384), ("rsa", 2048)], ids=type_id)
@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_tbs_matches_cryptography_builder(
    make_ca: Callable[[str, int], CertificateAuthority],
    client_key: Callable[[str, int], ClientKey],
    ca_type: tuple[str, int], client_type: tuple[str, int], validity: str,
) -> None:
    ca = make_ca(*ca_type)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    key = client_key(*client_type)
    public = serialization.load_der_public_key(key.public_key_info)
    not_before, not_after = VALIDITIES[validity]
    serial = int.from_bytes(uuid.uuid4().bytes + b"\xff", "big")
    cn = f"thing-{uuid.uuid4()}"
    rsa_client = key.key_type == "rsa"
    builder = (
        x509.CertificateBuilder()
        .serial_number(serial)
        .issuer_name(ca_cert.subject)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .public_key(public)  # type: ignore[arg-type]
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=rsa_client,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public),  # type: ignore[arg-type]
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(_ca_key_id(ca), None, None), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(CRL_URL)], None, None, None)]), critical=False)
    )
    software_key, hash_algorithm = _software_key(ca_type)
    reference = builder.sign(software_key, hash_algorithm)
    ours = ca.certificates.tbs_certificate(serial, cn, key, not_before, not_after)
    assert ours.hex() == reference.tbs_certificate_bytes.hex()


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_issued_certificate_is_canonical_der_around_its_tbs(
    make_ca: Callable[[str, int], CertificateAuthority],
    client_key: Callable[[str, int], ClientKey], ca_type: tuple[str, int],
) -> None:
    """issue() signs exactly tbs_certificate(...) and wraps it in canonical DER."""
    ca = make_ca(*ca_type)
    key = client_key("ec", 256)
    now = datetime.now(UTC).replace(microsecond=0)
    issued = ca.issue("thing-der", key, timedelta(hours=1), now=now)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    rebuilt = ca.certificates.tbs_certificate(
        issued.serial, "thing-der", key, issued.not_before, issued.not_after)
    assert cert.tbs_certificate_bytes == rebuilt
    parsed = asn1_x509.Certificate.load(issued.certificate_der)
    assert parsed.dump(force=True) == issued.certificate_der
    assert parsed["signature_algorithm"].dump() == _algorithm(ca_type).dump()
