"""``openssl ocsp`` against a real ``certs serve`` (SPEC 13): good, then revoked as soon as the
DELETE has returned, unknown for a serial never issued, with and without nonce, SHA-1 and
SHA-256 CertIDs, POST and GET; malformedRequest and unauthorized with HTTP 200; every answer
verified against the CA by openssl and by pyca/cryptography."""

import base64
import re
import secrets
import urllib.parse
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from tests.fixtures.identity import IdentityFixture
from tests.ocsp.conftest import OcspSetup
from tests.ocsp.helpers import Device, issue, ocsp_query, openssl, revoke

RESPONSE_TYPE = "application/ocsp-response"


def _device(service: OcspSetup, identity: IdentityFixture, name: str) -> Device:
    return issue(service.base_url, identity.alice.token, identity.thing_a1.id,
                 service.folder / "devices", name)


def _status_line(output: str, cert: Path) -> str:
    found = re.search(rf"^{re.escape(str(cert))}: (\w+)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def _verified(output: str) -> None:
    assert "Response verify OK" in output, output
    assert "WARNING" not in output, output  # e.g. "no nonce in response"


def test_good_then_revoked_right_after_the_delete(service: OcspSetup,
                                                  identity: IdentityFixture) -> None:
    device = _device(service, identity, "revoked")
    output = ocsp_query(service.ocsp_url, service.ca, "-cert", str(device.cert))
    _verified(output)
    assert _status_line(output, device.cert) == "good"
    revoke(service.base_url, identity.alice.token, device.serial)
    # No sleep: the revocation is in the store before the DELETE answers.
    output = ocsp_query(service.ocsp_url, service.ca, "-cert", str(device.cert))
    _verified(output)
    assert _status_line(output, device.cert) == "revoked"
    assert "Revocation Time:" in output


def test_unknown_for_a_serial_never_issued(service: OcspSetup) -> None:
    serial = "0x" + secrets.token_hex(19)
    output = ocsp_query(service.ocsp_url, service.ca, "-serial", serial)
    _verified(output)
    assert re.search(rf"^{serial}: unknown$", output, re.MULTILINE), output


def test_nonce_and_hashes(service: OcspSetup, identity: IdentityFixture) -> None:
    device = _device(service, identity, "hashes")
    for extra in ([], ["-no_nonce"], ["-sha256"], ["-sha256", "-no_nonce"]):
        output = ocsp_query(service.ocsp_url, service.ca, *extra, "-cert", str(device.cert),
                            "-resp_text")
        _verified(output)
        assert _status_line(output, device.cert) == "good", extra
        assert ("Hash Algorithm: sha256" in output) == ("-sha256" in extra), output
        assert ("OCSP Nonce" in output) == ("-no_nonce" not in extra), output


def test_several_certificates_in_one_request(service: OcspSetup,
                                             identity: IdentityFixture) -> None:
    good, gone = _device(service, identity, "one"), _device(service, identity, "two")
    revoke(service.base_url, identity.alice.token, gone.serial)
    output = ocsp_query(service.ocsp_url, service.ca, "-cert", str(good.cert),
                        "-cert", str(gone.cert), "-serial", "0x" + secrets.token_hex(18))
    _verified(output)
    assert _status_line(output, good.cert) == "good"
    assert _status_line(output, gone.cert) == "revoked"
    assert re.search(r"^0x[0-9a-f]+: unknown$", output, re.MULTILINE), output


def test_junk_gets_malformed_request_with_http_200(service: OcspSetup, tmp_path: Path) -> None:
    for junk in (b"", b"not an OCSP request", bytes.fromhex("3003020101")):
        response = httpx.post(service.ocsp_url, content=junk, timeout=30,
                              headers={"Content-Type": "application/ocsp-request"})
        assert response.status_code == 200
        assert response.headers["content-type"] == RESPONSE_TYPE
        assert ocsp.load_der_ocsp_response(response.content).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        answer = tmp_path / "malformed.der"
        answer.write_bytes(response.content)
        printed = openssl("ocsp", "-respin", str(answer), "-resp_text", check=False)
        assert "malformedrequest" in (printed.stdout + printed.stderr).lower()
    for path in ("/ocsp/", "/ocsp/!!!", "/ocsp/bm90IGFuIE9DU1AgcmVxdWVzdA=="):
        response = httpx.get(f"{service.base_url}{path}", timeout=30)
        assert response.status_code == 200
        assert ocsp.load_der_ocsp_response(response.content).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_another_ca_gets_unauthorized(service: OcspSetup, tmp_path: Path) -> None:
    other_key, other = tmp_path / "other.key", tmp_path / "other.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(other_key), "-out", str(other), "-subj", "/CN=other CA", "-days", "1")
    output = ocsp_query(service.ocsp_url, other, "-serial", "0x1234")
    assert "unauthorized" in output.lower(), output


def _request(device: Device, ca: Path, algorithm: hashes.HashAlgorithm, nonce: bytes | None
             ) -> bytes:
    cert = x509.load_pem_x509_certificate(device.cert.read_bytes())
    issuer = x509.load_pem_x509_certificate(ca.read_bytes())
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def _check_signed(answer: bytes, ca: Path, serial: str, status: ocsp.OCSPCertStatus,
                  nonce: bytes | None) -> None:
    """A second implementation: cryptography parses it and checks the CA's signature."""
    response = ocsp.load_der_ocsp_response(answer)
    assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.serial_number == int(serial, 16)
    assert response.certificate_status == status
    public_key = x509.load_pem_x509_certificate(ca.read_bytes()).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public_key.verify(response.signature, response.tbs_response_bytes,
                      ec.ECDSA(response.signature_hash_algorithm))
    echoed = [ext.value.nonce for ext in response.extensions
              if isinstance(ext.value, x509.OCSPNonce)]
    assert echoed == ([nonce] if nonce is not None else [])
    assert response.next_update_utc is not None and response.this_update_utc is not None
    assert (response.next_update_utc - response.this_update_utc).total_seconds() == 3600


def test_get_form_with_slashes_and_escapes(service: OcspSetup, identity: IdentityFixture,
                                           tmp_path: Path) -> None:
    device = _device(service, identity, "get")
    # A nonce that makes the base64 hold "/" and "+": the route takes a path with slashes.
    while True:
        nonce = secrets.token_bytes(16)
        der = _request(device, service.ca, hashes.SHA1(), nonce)
        text = base64.b64encode(der).decode()
        if "/" in text and "+" in text:
            break
    head = httpx.head(f"{service.ocsp_url}/{text}", timeout=30)
    assert (head.status_code, head.headers["content-type"]) == (200, RESPONSE_TYPE)
    for path in (text, urllib.parse.quote(text, safe=""), text.rstrip("=")):
        response = httpx.get(f"{service.ocsp_url}/{path}", timeout=30)
        assert response.status_code == 200
        assert response.headers["content-type"] == RESPONSE_TYPE
        _check_signed(response.content, service.ca, device.serial, ocsp.OCSPCertStatus.GOOD,
                      nonce)
    # openssl reads the GET answer too, checking the nonce against the request it was for.
    request_file, answer_file = tmp_path / "request.der", tmp_path / "answer.der"
    request_file.write_bytes(der)
    answer_file.write_bytes(httpx.get(f"{service.ocsp_url}/{text}", timeout=30).content)
    output = openssl("ocsp", "-reqin", str(request_file), "-respin", str(answer_file),
                     "-CAfile", str(service.ca), "-verify_other", str(service.ca),
                     "-resp_text", check=False)
    _verified(output.stdout + output.stderr)
    assert "Cert Status: good" in output.stdout, output.stdout

def test_post_answers_verify_with_cryptography(service: OcspSetup,
                                               identity: IdentityFixture) -> None:
    device = _device(service, identity, "post")
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        for nonce in (None, secrets.token_bytes(20)):
            der = _request(device, service.ca, algorithm, nonce)
            response = httpx.post(service.ocsp_url, content=der, timeout=30,
                                  headers={"Content-Type": "application/ocsp-request"})
            assert response.status_code == 200
            _check_signed(response.content, service.ca, device.serial,
                          ocsp.OCSPCertStatus.GOOD, nonce)
    revoke(service.base_url, identity.alice.token, device.serial)
    der = _request(device, service.ca, hashes.SHA256(), None)
    answer = httpx.post(service.ocsp_url, content=der, timeout=30).content
    _check_signed(answer, service.ca, device.serial, ocsp.OCSPCertStatus.REVOKED, None)


def test_certificates_name_the_responder_and_openssl_follows_it(
        service: OcspSetup, identity: IdentityFixture) -> None:
    device = _device(service, identity, "aia")
    text = openssl("x509", "-in", str(device.cert), "-noout", "-text").stdout
    assert "Authority Information Access:" in text
    assert f"OCSP - URI:{service.ocsp_url}" in text, text
    cert = x509.load_pem_x509_certificate(device.cert.read_bytes())
    access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in access] == [
        (x509.AuthorityInformationAccessOID.OCSP, service.ocsp_url)]
    url = openssl("x509", "-in", str(device.cert), "-noout", "-ocsp_uri").stdout.strip()
    assert url == service.ocsp_url
    output = ocsp_query(url, service.ca, "-cert", str(device.cert))
    _verified(output)
    assert _status_line(output, device.cert) == "good"
