"""Certification requests (SPEC sections 3 and 12) made by openssl and cryptography: the key
reported, the proof of possession checked, and certificates issued for exactly that key."""

import base64
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from hsm.authority import CertificateAuthority
from hsm.csr import (
    CertificationRequest,
    CsrError,
    InvalidCsr,
    UnsupportedCsrKey,
    load_base64_csr,
    load_der_csr,
    load_pem_csr,
)
from hsm.public_key import UnsupportedKey, certificate_key, public_key_only
from tests.hsm.helpers import openssl, openssl_verify_client, type_id

KEY_TYPES = [("rsa", 2048), ("rsa", 3072), ("rsa", 4096), ("ec", 256), ("ec", 384), ("ec", 521)]
CA_TYPES = [("ec", 256), ("rsa", 2048)]
CURVES = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1(), 224: ec.SECP224R1()}
OPENSSL_CURVES = {256: "P-256", 384: "P-384", 521: "P-521", 224: "P-224"}
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
Csrs = dict[tuple[str, str, int], tuple[bytes, Path]]


def openssl_csr(directory: Path, name: str, *newkey: str) -> tuple[bytes, Path]:
    """A PEM request and its key file from ``openssl req -newkey``, with a subject and
    extensions the CA must ignore."""
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    result = openssl(
        "req", "-new", "-nodes", "-newkey", *newkey, "-keyout", str(key), "-out", str(request),
        "-subj", "/CN=someone-else/O=Device Maker", "-addext", "subjectAltName=DNS:evil.example",
        "-addext", "basicConstraints=critical,CA:TRUE", timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return request.read_bytes(), key


def openssl_newkey(key_type: str, bits: int) -> list[str]:
    if key_type == "rsa":
        return [f"rsa:{bits}"]
    return ["ec", "-pkeyopt", f"ec_paramgen_curve:{OPENSSL_CURVES[bits]}"]


def cryptography_csr(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "not-the-thing"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Elsewhere"),
    ])).add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)
    return builder.sign(private, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def private_key(key_type: str, bits: int) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ec.generate_private_key(CURVES[bits])


@pytest.fixture(scope="module")
def csrs(tmp_path_factory: pytest.TempPathFactory) -> Csrs:
    """(maker, key type, bits) -> PEM request and the device's key file, made once."""
    directory = tmp_path_factory.mktemp("csrs")
    made: Csrs = {}
    for key_type, bits in KEY_TYPES:
        made[("openssl", key_type, bits)] = openssl_csr(
            directory, f"openssl-{key_type}{bits}", *openssl_newkey(key_type, bits))
        private = private_key(key_type, bits)
        key_file = directory / f"cryptography-{key_type}{bits}.key"
        key_file.write_bytes(private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        made[("cryptography", key_type, bits)] = (cryptography_csr(private), key_file)
    return made


def spki_of(pem: bytes) -> bytes:
    return x509.load_pem_x509_csr(pem).public_key().public_bytes(*SPKI)


@pytest.mark.parametrize("maker", ["openssl", "cryptography"])
@pytest.mark.parametrize("key", KEY_TYPES, ids=type_id)
def test_key_is_reported(csrs: Csrs, maker: str,
                         key: tuple[str, int]) -> None:
    pem, _ = csrs[(maker, *key)]
    request = load_pem_csr(pem)
    assert (request.key_type, request.key_bits) == key
    assert request.public_key_info == spki_of(pem)
    assert load_pem_csr(pem.decode()) == request
    legacy = pem.replace(b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST")
    assert load_pem_csr(legacy) == request  # the label older tools write
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert load_der_csr(der) == request
    assert load_base64_csr(base64.encodebytes(der)) == request  # 76-column lines
    assert load_base64_csr(base64.b64encode(der).decode() + "\r\n") == request
    assert request.key.private_key_pem == ""
    assert request.key.public_key_info == request.public_key_info


@pytest.mark.parametrize("ca_type", CA_TYPES, ids=type_id)
@pytest.mark.parametrize("maker", ["openssl", "cryptography"])
@pytest.mark.parametrize("key", KEY_TYPES, ids=type_id)
def test_issued_certificate_holds_exactly_the_csr_key(
    csrs: Csrs,
    make_ca: Callable[[str, int], CertificateAuthority], ca_files: Callable[[str, int], Path],
    tmp_path: Path, ca_type: tuple[str, int], maker: str, key: tuple[str, int],
) -> None:
    pem, key_file = csrs[(maker, *key)]
    request = load_pem_csr(pem)
    issued = make_ca(*ca_type).issue("thing-1234", request.key, timedelta(hours=2))
    assert issued.private_key_pem == ""
    assert (issued.key_type, issued.key_bits) == key

    cert = x509.load_der_x509_certificate(issued.certificate_der)
    assert cert.public_key().public_bytes(*SPKI) == spki_of(pem)
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "thing-1234")])
    present = {extension.oid for extension in cert.extensions}
    assert ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in present
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment == (key[0] == "rsa")
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(x509.load_pem_x509_csr(pem).public_key()))

    cert_file = tmp_path / "issued.pem"
    cert_file.write_text(issued.certificate_pem)
    verified = openssl_verify_client(ca_files(*ca_type), cert_file)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The device's own private key belongs to the certificate (openssl, a second parser).
    from_cert = openssl("x509", "-in", str(cert_file), "-noout", "-pubkey")
    from_key = openssl("pkey", "-in", str(key_file), "-pubout")
    assert from_cert.returncode == 0 and from_key.returncode == 0
    assert from_cert.stdout == from_key.stdout


def test_certificate_key_recertifies_the_same_key(
    csrs: Csrs, authority: CertificateAuthority,
) -> None:
    """Renew of a CSR certificate: the key read back from the certificate is the CSR's."""
    request = load_pem_csr(csrs[("openssl", "ec", 384)][0])
    first = authority.issue("thing-r", request.key, timedelta(hours=1))
    key = certificate_key(first.certificate_der)
    assert key == request.key
    second = authority.issue("thing-r", key, timedelta(hours=1))
    assert second.serial != first.serial
    assert x509.load_der_x509_certificate(second.certificate_der).public_key().public_bytes(
        *SPKI) == request.public_key_info


def test_sizes_outside_the_policy_are_reported_not_refused(tmp_path: Path) -> None:
    """The key policy is the domain's: RSA-1024 and P-224 are reported as what they are."""
    small, _ = openssl_csr(tmp_path, "rsa1024", "rsa:1024")
    assert (load_pem_csr(small).key_type, load_pem_csr(small).key_bits) == ("rsa", 1024)
    p224, _ = openssl_csr(tmp_path, "p224", *openssl_newkey("ec", 224))
    assert load_pem_csr(p224).key_bits == 224


@pytest.mark.parametrize("newkey", [
    ["ed25519"], ["ed448"], ["rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"],
    ["ec", "-pkeyopt", "ec_paramgen_curve:brainpoolP256r1"],
    ["ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
    ["ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-pkeyopt", "ec_param_enc:explicit"],
], ids=["ed25519", "ed448", "rsa-pss", "brainpool", "secp256k1", "explicit-curve"])
def test_other_keys_are_unsupported(tmp_path: Path, newkey: list[str]) -> None:
    pem, _ = openssl_csr(tmp_path, "other", *newkey)
    with pytest.raises(UnsupportedCsrKey):
        load_pem_csr(pem)


def test_sha1_signed_request_is_refused_with_its_reason(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    request = tmp_path / "sha1.csr"
    result = openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
                     "ec_paramgen_curve:P-256", "-keyout", str(key), "-subj", "/CN=x", "-sha1",
                     "-out", str(request))
    assert result.returncode == 0, result.stderr
    with pytest.raises(InvalidCsr, match="SHA1"):
        load_pem_csr(request.read_bytes())


def _tampered(pem: bytes, position: int) -> bytes:
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[position] ^= 0x01
    return bytes(der)


@pytest.mark.parametrize("maker", ["openssl", "cryptography"])
@pytest.mark.parametrize("key", [("rsa", 2048), ("ec", 256)], ids=type_id)
def test_tampered_requests_are_invalid(
    csrs: Csrs, maker: str, key: tuple[str, int],
) -> None:
    pem, _ = csrs[(maker, *key)]
    original = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    signature_at = len(original) - 5
    subject_at = original.index(b"someone-else" if maker == "openssl" else b"not-the-thing")
    for position in (signature_at, subject_at):
        der = _tampered(pem, position)
        with pytest.raises(InvalidCsr):
            load_der_csr(der)
        with pytest.raises(InvalidCsr):
            load_base64_csr(base64.b64encode(der))


def test_key_swapped_under_a_signature_is_invalid(
    csrs: Csrs,
) -> None:
    """Another key put in a signed request: the signature no longer proves possession."""
    victim = csrs[("cryptography", "ec", 256)][0]
    other = private_key("ec", 256).public_key().public_bytes(*SPKI)
    der = x509.load_pem_x509_csr(victim).public_bytes(serialization.Encoding.DER)
    swapped = der.replace(spki_of(victim), other)
    assert swapped != der
    with pytest.raises(InvalidCsr):
        load_der_csr(swapped)


@pytest.mark.parametrize("text", [
    b"", b"hello",
    b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64!\n-----END CERTIFICATE REQUEST-----\n",
], ids=["empty", "text", "short", "not-base64"])
def test_not_pem_requests_are_invalid(text: bytes) -> None:
    with pytest.raises(InvalidCsr):
        load_pem_csr(text)


def test_other_pem_and_der_are_invalid(
    csrs: Csrs, authority: CertificateAuthority,
) -> None:
    pem = csrs[("openssl", "ec", 256)][0]
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    with pytest.raises(InvalidCsr):
        load_pem_csr(authority.ca_pem)  # a certificate is not a request
    with pytest.raises(InvalidCsr):
        load_pem_csr(der)  # DER where PEM is asked for
    with pytest.raises(InvalidCsr):
        load_der_csr(pem)
    with pytest.raises(InvalidCsr):
        load_der_csr(der + b"\x00")
    with pytest.raises(InvalidCsr):
        load_base64_csr(b"%%%")
    with pytest.raises(InvalidCsr):
        load_base64_csr(base64.b64encode(b"\x30\x03\x02\x01\x01"))


def test_errors_are_value_errors() -> None:
    assert issubclass(InvalidCsr, CsrError) and issubclass(UnsupportedCsrKey, CsrError)
    assert issubclass(CsrError, ValueError)
    assert CertificationRequest("ec", 256, b"").key.key_bits == 256


def test_public_key_only_refuses_what_it_cannot_name() -> None:
    with pytest.raises(UnsupportedKey):
        public_key_only(b"\x30\x00")
    with pytest.raises(UnsupportedKey):
        public_key_only(b"junk")
    generated = private_key("ec", 521).public_key().public_bytes(*SPKI)
    assert (public_key_only(generated).key_type, public_key_only(generated).key_bits) == (
        "ec", 521)

