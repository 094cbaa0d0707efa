"""The client certificate profile (SPEC section 5), checked with openssl and cryptography.

Every CA key type the token holds signs a certificate for every client key type; the result
must pass ``openssl verify -purpose sslclient`` and match the profile field by field when
``cryptography`` parses it.
"""

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, SignatureAlgorithmOID

from hsm.authority import CertificateAuthority
from hsm.certificate import CertificateTemplate, IssuedCertificate
from hsm.client_keys import ClientKey, generate_client_key
from tests.hsm.helpers import (
    CA_TYPES,
    CA_TYPES_WITH_RSA_3072,
    CLIENT_TYPES,
    openssl,
    openssl_verify_client,
    type_id,
    verify_signature,
)

CRL_URL = "http://localhost:8204/crl"  # what tests/fixtures/hsm.py configures
SIGNATURE_OIDS = {
    ("rsa", 2048): SignatureAlgorithmOID.RSA_WITH_SHA256,
    ("rsa", 3072): SignatureAlgorithmOID.RSA_WITH_SHA256,
    ("ec", 256): SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    ("ec", 384): SignatureAlgorithmOID.ECDSA_WITH_SHA384,
}
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _openssl_verifies(ca_file: Path, issued: IssuedCertificate, tmp_path: Path) -> None:
    cert_file = tmp_path / f"client-{issued.serial_hex}.pem"
    cert_file.write_text(issued.certificate_pem)
    result = openssl_verify_client(ca_file, cert_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{cert_file}: OK"


@pytest.mark.parametrize("client_type", CLIENT_TYPES, ids=type_id)
@pytest.mark.parametrize("ca_type", CA_TYPES_WITH_RSA_3072, ids=type_id)
def test_issued_certificate_matches_profile(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    client_key: Callable[[str, int], ClientKey],
    tmp_path: Path,
    ca_type: tuple[str, int],
    client_type: tuple[str, int],
) -> None:
    ca = make_ca(*ca_type)
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    thing_id = str(uuid.uuid4())
    ttl = timedelta(days=3, hours=5, minutes=7, seconds=11)

    before = datetime.now(UTC)
    issued = ca.issue(thing_id, client_key(*client_type), ttl)
    after = datetime.now(UTC)

    # 1. openssl accepts it as a TLS client certificate of this CA.
    _openssl_verifies(ca_files(*ca_type), issued, tmp_path)

    # 2. cryptography reads the same bytes as the PEM and the DER the result carries.
    cert = x509.load_pem_x509_certificate(issued.certificate_pem.encode())
    assert cert.public_bytes(serialization.Encoding.DER) == issued.certificate_der
    assert x509.load_der_x509_certificate(issued.certificate_der) == cert
    assert cert.version is x509.Version.v3

    # Serial: positive, at most 20 octets, the same in the result, lowercase hex.
    assert cert.serial_number == issued.serial
    assert issued.serial > 0
    raw_serial = asn1_x509.Certificate.load(issued.certificate_der)["tbs_certificate"][
        "serial_number"
    ].contents
    assert 1 <= len(raw_serial) <= 20
    assert raw_serial[0] < 0x80  # a non-negative DER INTEGER
    assert re.fullmatch(r"[0-9a-f]+", issued.serial_hex)
    assert int(issued.serial_hex, 16) == issued.serial
    assert not issued.serial_hex.startswith("0")

    # Names.
    assert cert.issuer == ca_cert.subject
    assert cert.issuer.public_bytes() == ca_cert.subject.public_bytes()
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, thing_id)])

    # Validity: notBefore = now - 60 s, notAfter = now + ttl (same "now", whole seconds).
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    assert before.replace(microsecond=0) - timedelta(seconds=60) <= not_before
    assert not_before <= after - timedelta(seconds=60)
    assert abs(not_before - (before - timedelta(seconds=60))) < timedelta(seconds=2)
    assert not_after - not_before == ttl + timedelta(seconds=60)
    assert (issued.not_before, issued.not_after) == (not_before, not_after)

    # Extensions: exactly these, with these values and criticality.
    extensions = cert.extensions
    assert sorted(e.oid.dotted_string for e in extensions) == sorted(
        oid.dotted_string for oid in (
            ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER, ExtensionOID.CRL_DISTRIBUTION_POINTS,
        )
    )
    is_rsa_client = client_type[0] == "rsa"
    key_usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert key_usage.critical
    assert key_usage.value == x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=is_rsa_client,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )
    assert extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    )
    basic = extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value == x509.BasicConstraints(ca=False, path_length=None)
    ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.value == x509.AuthorityKeyIdentifier(ca_ski.digest, None, None)
    assert extensions.get_extension_for_class(x509.CRLDistributionPoints).value == (
        x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(CRL_URL)], relative_name=None,
            reasons=None, crl_issuer=None,
        )])
    )

    # Signature: the algorithm the CA key calls for, valid under the CA's public key.
    assert cert.signature_algorithm_oid == SIGNATURE_OIDS[ca_type]
    parsed = asn1_x509.Certificate.load(issued.certificate_der)
    assert parsed["signature_algorithm"].dump() == parsed["tbs_certificate"]["signature"].dump()
    verify_signature(ca_cert.public_key(), cert.signature, cert.tbs_certificate_bytes,
                     cert.signature_hash_algorithm)
    cert.verify_directly_issued_by(ca_cert)

    # The private key: traditional PEM of the right type and size, matching the certificate.
    header = "RSA PRIVATE KEY" if is_rsa_client else "EC PRIVATE KEY"
    assert issued.private_key_pem.startswith(f"-----BEGIN {header}-----\n")
    assert issued.private_key_pem.rstrip().endswith(f"-----END {header}-----")
    private = serialization.load_pem_private_key(issued.private_key_pem.encode(), password=None)
    assert private.public_key().public_bytes(*SPKI) == cert.public_key().public_bytes(*SPKI)
    assert (issued.key_type, issued.key_bits) == client_type
    if is_rsa_client:
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == client_type[1]
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.key_size == client_type[1]

    # openssl agrees that key and certificate belong together.
    key_file = tmp_path / "client.key"
    key_file.write_text(issued.private_key_pem)
    cert_file = tmp_path / "client-again.pem"
    cert_file.write_text(issued.certificate_pem)
    from_key = openssl("pkey", "-in", str(key_file), "-pubout")
    from_cert = openssl("x509", "-in", str(cert_file), "-noout", "-pubkey")
    assert from_key.returncode == 0 and from_cert.returncode == 0
    assert from_key.stdout == from_cert.stdout


def test_serials_are_distinct(authority: CertificateAuthority) -> None:
    key = generate_client_key("ec", 256)
    serials = {authority.issue("thing", key, timedelta(hours=1)).serial for _ in range(200)}
    assert len(serials) == 200
    # 159 random bits: over 200 draws some serial has its top bits set (20 octets long).
    assert max(serials).bit_length() >= 152


def test_not_after_past_2049_is_generalized_time(
    authority: CertificateAuthority, ca_files: Callable[[str, int], Path], tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    target = datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC)
    issued = authority.issue("thing-2051", generate_client_key("ec", 256), target - now, now=now)

    validity = asn1_x509.Certificate.load(issued.certificate_der)["tbs_certificate"]["validity"]
    assert validity["not_before"].name == "utc_time"
    assert validity["not_after"].name == "general_time"
    assert validity["not_after"].chosen.dump() == b"\x18\x0f" + b"20510304050607Z"
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert cert.not_valid_after_utc == target
    assert cert.not_valid_after_utc.year == 2051
    _openssl_verifies(ca_files("ec", 256), issued, tmp_path)
    cert_file = tmp_path / "c.pem"
    cert_file.write_text(issued.certificate_pem)
    end = openssl("x509", "-in", str(cert_file), "-noout", "-enddate")
    assert end.stdout.strip() == "notAfter=Mar  4 05:06:07 2051 GMT"


@pytest.mark.parametrize(
    ("ttl", "tag", "text"),
    [
        (timedelta(minutes=59, seconds=59), 0x17, b"491231235959Z"),
        (timedelta(hours=1), 0x18, b"20500101000000Z"),
    ],
    ids=["last-utctime", "first-generalizedtime"],
)
def test_time_encoding_switches_at_2050(
    authority: CertificateAuthority, ttl: timedelta, tag: int, text: bytes
) -> None:
    now = datetime(2049, 12, 31, 23, 0, 0, tzinfo=UTC)
    issued = authority.issue("thing", generate_client_key("ec", 256), ttl, now=now)
    validity = asn1_x509.Certificate.load(issued.certificate_der)["tbs_certificate"]["validity"]
    assert validity["not_after"].chosen.dump() == bytes((tag, len(text))) + text
    assert validity["not_before"].chosen.dump() == b"\x17\x0d491231225900Z"
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert cert.not_valid_after_utc == now + ttl


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
def test_ocsp_location_without_crl(
    make_ca: Callable[[str, int], CertificateAuthority],
    ca_files: Callable[[str, int], Path],
    tmp_path: Path,
    ca_type: tuple[str, int],
) -> None:
    ca = make_ca(*ca_type)
    template = CertificateTemplate(ca.ca_certificate, ca.signer, crl_url=None,
                                   ocsp_url="http://ocsp.example.test:8080/")
    issued = template.issue("thing-ocsp", generate_client_key("ec", 256), timedelta(hours=2))
    _openssl_verifies(ca_files(*ca_type), issued, tmp_path)
    cert = x509.load_der_x509_certificate(issued.certificate_der)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert not access.critical
    assert access.value == x509.AuthorityInformationAccess([x509.AccessDescription(
        x509.oid.AuthorityInformationAccessOID.OCSP,
        x509.UniformResourceIdentifier("http://ocsp.example.test:8080/"),
    )])
    assert len(cert.extensions) == 6


def test_subject_cn_is_encoded_for_any_thing_id(
    authority: CertificateAuthority, ca_files: Callable[[str, int], Path], tmp_path: Path
) -> None:
    """A thing key can stand in the CN (MF_CERTS_SUBJECT_CN=thing_key): long and non-ASCII."""
    for cn in ("k" * 64, "thing-ü-雪-🔑", "a"):
        issued = authority.issue(cn, generate_client_key("ec", 256), timedelta(hours=1))
        cert = x509.load_der_x509_certificate(issued.certificate_der)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        _openssl_verifies(ca_files("ec", 256), issued, tmp_path)


def test_pem_armour(authority: CertificateAuthority) -> None:
    issued = authority.issue("thing", generate_client_key("ec", 256), timedelta(hours=1))
    lines = issued.certificate_pem.splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE-----"
    assert lines[-1] == "-----END CERTIFICATE-----"
    assert all(len(line) == 64 for line in lines[1:-2])
    assert 0 < len(lines[-2]) <= 64
    assert issued.certificate_pem.endswith("\n")
