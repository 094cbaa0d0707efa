"""Certs-only CMS (EST, SPEC section 12) read back by openssl and cryptography."""

import base64
import itertools
import re
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from hsm.authority import CertificateAuthority
from hsm.client_keys import ClientKey
from hsm.cms import certs_only
from tests.hsm.helpers import openssl


@pytest.fixture(scope="module")
def certificates(make_ca: Callable[[str, int], CertificateAuthority],
                 client_key: Callable[[str, int], ClientKey]) -> list[bytes]:
    """Two CA certificates and a client certificate, DER."""
    ec_ca, rsa_ca = make_ca("ec", 256), make_ca("rsa", 2048)
    issued = ec_ca.issue("thing-cms", client_key("ec", 256), timedelta(hours=1))
    return [issued.certificate_der, ec_ca.ca_certificate.dump(), rsa_ca.ca_certificate.dump()]


def subjects(der_certificates: list[bytes]) -> list[str]:
    return [x509.load_der_x509_certificate(item).subject.rfc4514_string()
            for item in der_certificates]


def load_strictly(message: bytes) -> list[x509.Certificate]:
    """cryptography's PKCS#7 loader, with its not-DER fallback warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pkcs7.load_der_pkcs7_certificates(message)


def openssl_print_certs(message: bytes, tmp_path: Path) -> list[str]:
    """The subjects ``openssl pkcs7 -print_certs`` lists, read from the base64 an EST server
    sends (decoded by ``openssl base64 -d`` as a shell client would)."""
    encoded = tmp_path / "answer.b64"
    encoded.write_bytes(base64.encodebytes(message))
    decoded = tmp_path / "answer.p7"
    result = openssl("base64", "-d", "-in", str(encoded), "-out", str(decoded))
    assert result.returncode == 0, result.stderr
    assert decoded.read_bytes() == message
    result = openssl("pkcs7", "-inform", "DER", "-in", str(decoded), "-print_certs", "-noout")
    assert result.returncode == 0, result.stderr
    return re.findall(r"^subject=(.*)$", result.stdout, re.MULTILINE)


def test_one_certificate(certificates: list[bytes], tmp_path: Path) -> None:
    message = certs_only([certificates[0]])
    assert [c.public_bytes(Encoding.DER) for c in load_strictly(message)] == [certificates[0]]
    assert openssl_print_certs(message, tmp_path) == ["CN = thing-cms"]


def test_chain_in_any_order_is_one_der_encoding(certificates: list[bytes],
                                                 tmp_path: Path) -> None:
    messages = {certs_only(list(order)) for order in itertools.permutations(certificates)}
    assert len(messages) == 1
    message = messages.pop()
    loaded = [c.public_bytes(Encoding.DER) for c in load_strictly(message)]
    assert sorted(loaded) == sorted(certificates)
    listed = openssl_print_certs(message, tmp_path)
    assert sorted(listed) == sorted(
        ", ".join(reversed(name.split(","))).replace("=", " = ")
        for name in subjects(certificates))


def test_same_bytes_as_openssl_crl2pkcs7(certificates: list[bytes], tmp_path: Path) -> None:
    """openssl writes the certificates in the order given; in DER order, both agree exactly."""
    message = certs_only(certificates)
    in_der_order = [c.public_bytes(Encoding.DER) for c in load_strictly(message)]
    chain = tmp_path / "chain.pem"
    chain.write_text("".join(
        x509.load_der_x509_certificate(item).public_bytes(Encoding.PEM).decode()
        for item in in_der_order))
    out = tmp_path / "openssl.p7"
    result = openssl("crl2pkcs7", "-nocrl", "-certfile", str(chain), "-outform", "DER",
                     "-out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == message


def test_structure_is_degenerate_signed_data(certificates: list[bytes]) -> None:
    info = asn1_cms.ContentInfo.load(certs_only(certificates[:2]))
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    assert signed["version"].native == "v1"
    assert len(signed["digest_algorithms"]) == 0
    assert len(signed["signer_infos"]) == 0
    assert signed["encap_content_info"]["content_type"].native == "data"
    assert signed["encap_content_info"]["content"].native is None
    assert not signed["crls"]
    assert len(signed["certificates"]) == 2


def test_nothing_or_not_certificates_refused() -> None:
    with pytest.raises(ValueError):
        certs_only([])
    with pytest.raises(ValueError):
        certs_only([b"not a certificate"])
