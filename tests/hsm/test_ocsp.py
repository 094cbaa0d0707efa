"""OCSP responses (SPEC section 13) signed in the HSM, for requests made by openssl and
cryptography, checked by ``openssl ocsp`` and by cryptography's OCSP parser."""

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp as x509_ocsp

from hsm.authority import CertificateAuthority
from hsm.certificate import IssuedCertificate
from hsm.client_keys import ClientKey
from hsm.ocsp import (
    GOOD,
    MALFORMED_REQUEST,
    UNAUTHORIZED,
    UNKNOWN,
    CertStatus,
    MalformedOcspRequest,
    OcspResponder,
    parse_request,
    revoked,
)
from tests.hsm.helpers import openssl, type_id, verify_signature

CA_TYPES = [("ec", 256), ("rsa", 2048), ("ec", 384)]
VALIDITY = timedelta(hours=1)
REVOKED_AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture(params=CA_TYPES, ids=type_id)
def ca_type(request: pytest.FixtureRequest) -> tuple[str, int]:
    value: tuple[str, int] = request.param
    return value


@pytest.fixture
def ca(make_ca: Callable[[str, int], CertificateAuthority],
       ca_type: tuple[str, int]) -> CertificateAuthority:
    return make_ca(*ca_type)


@pytest.fixture
def responder(ca: CertificateAuthority) -> OcspResponder:
    return OcspResponder(ca.ca_certificate, ca.signer)


@pytest.fixture
def files(ca: CertificateAuthority, client_key: Callable[[str, int], ClientKey],
          ca_files: Callable[[str, int], Path], ca_type: tuple[str, int],
          tmp_path: Path) -> dict[str, Path]:
    """The CA file and two certificates it issued, as PEM files for openssl."""
    paths = {"ca": ca_files(*ca_type)}
    for name in ("first", "second"):
        issued = ca.issue(f"thing-{name}", client_key("ec", 256), timedelta(hours=1))
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_text(issued.certificate_pem)
    return paths


def serial_of(path: Path) -> int:
    serial: int = x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    return serial


def openssl_request(files: dict[str, Path], tmp_path: Path, *options: str,
                    certs: tuple[str, ...] = ("first",)) -> Path:
    request = tmp_path / "request.der"
    args = ["ocsp", "-issuer", str(files["ca"]), *options]
    for name in certs:
        args += ["-cert", str(files[name])]
    result = openssl(*args, "-reqout", str(request))
    assert result.returncode == 0, result.stderr
    return request


def openssl_check(files: dict[str, Path], request: Path, response: bytes, tmp_path: Path,
                  trust: str, certs: tuple[str, ...] = ("first",)) -> str:
    """What ``openssl ocsp -respin`` says of the response (verify and nonce checked)."""
    response_file = tmp_path / "response.der"
    response_file.write_bytes(response)
    args = ["ocsp", "-respin", str(response_file), "-reqin", str(request),
            "-issuer", str(files["ca"]), trust, str(files["ca"])]
    for name in certs:
        args += ["-cert", str(files[name])]
    result = openssl(*args)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Response verify OK" in said, said
    assert "WARNING" not in said, said
    return result.stdout


def statuses(**by_serial: CertStatus) -> Callable[[int], CertStatus]:
    table = {int(key[1:]): value for key, value in by_serial.items()}
    return lambda serial: table.get(serial, UNKNOWN)


@pytest.mark.parametrize("trust", ["-VAfile", "-CAfile"])
@pytest.mark.parametrize("digest", ["-sha1", "-sha256"])
@pytest.mark.parametrize("nonce", ["-nonce", "-no_nonce"])
def test_openssl_request_good_revoked_unknown(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path,
    trust: str, digest: str, nonce: str,
) -> None:
    request = openssl_request(files, tmp_path, digest, nonce, certs=("first", "second"))
    first, second = serial_of(files["first"]), serial_of(files["second"])
    table = {first: GOOD, second: revoked(REVOKED_AT, "key_compromise")}
    response = responder.respond(request.read_bytes(), table.__getitem__, VALIDITY)
    said = openssl_check(files, request, response, tmp_path, trust, certs=("first", "second"))
    assert f"{files['first']}: good" in said, said
    assert f"{files['second']}: revoked" in said, said
    assert "Reason: keyCompromise" in said, said
    assert "Revocation Time: Mar  4 05:06:07 2026 GMT" in said, said

    unknown = responder.respond(request.read_bytes(), lambda serial: UNKNOWN, VALIDITY)
    said = openssl_check(files, request, unknown, tmp_path, trust, certs=("first", "second"))
    assert said.count(": unknown") == 2, said


@pytest.mark.parametrize("digest", [hashes.SHA1(), hashes.SHA256()], ids=lambda h: h.name)
@pytest.mark.parametrize("with_nonce", [True, False], ids=["nonce", "no-nonce"])
def test_cryptography_request_and_response(
    responder: OcspResponder, ca: CertificateAuthority, files: dict[str, Path],
    digest: hashes.HashAlgorithm, with_nonce: bool,
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(files["first"].read_bytes())
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(cert, ca_cert, digest)
    nonce = b"\x07" * 16
    if with_nonce:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    request_der = builder.build().public_bytes(x509_ocsp.serialization.Encoding.DER)
    before = datetime.now(UTC).replace(microsecond=0)
    response_der = responder.respond(
        request_der, statuses(**{f"s{cert.serial_number}": revoked(REVOKED_AT, "superseded")}),
        VALIDITY)

    response = x509_ocsp.load_der_ocsp_response(response_der)
    assert response.response_status == x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
    assert response.serial_number == cert.serial_number
    assert response.revocation_time_utc == REVOKED_AT
    assert response.revocation_reason == x509.ReasonFlags.superseded
    assert response.hash_algorithm.name == digest.name
    assert response.certificates == []
    assert response.responder_name is None
    ca_key_bits = ca.ca_certificate.public_key["public_key"].contents[1:]
    assert response.responder_key_hash == hashlib.sha1(ca_key_bits).digest()
    assert before <= response.produced_at_utc <= datetime.now(UTC)
    assert response.this_update_utc == response.produced_at_utc
    assert response.next_update_utc == response.this_update_utc + VALIDITY
    assert response.signature_hash_algorithm is not None
    assert response.signature_hash_algorithm.name == "sha256"
    verify_signature(ca_cert.public_key(), response.signature, response.tbs_response_bytes,
                     hashes.SHA256())
    nonces = [ext.value.nonce for ext in response.extensions
              if isinstance(ext.value, x509.OCSPNonce)]
    assert nonces == ([nonce] if with_nonce else [])


def test_reasons_and_statuses_parse(
    responder: OcspResponder, ca: CertificateAuthority, files: dict[str, Path],
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(files["first"].read_bytes())
    request_der = x509_ocsp.OCSPRequestBuilder().add_certificate(
        cert, ca_cert, hashes.SHA256()).build().public_bytes(x509_ocsp.serialization.Encoding.DER)
    expected = {
        None: None, "unspecified": None, "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
        "ca_compromise": x509.ReasonFlags.ca_compromise,
    }
    for reason, flag in expected.items():
        der = responder.respond(request_der, lambda serial, r=reason: revoked(REVOKED_AT, r),
                                VALIDITY)
        response = x509_ocsp.load_der_ocsp_response(der)
        assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
        assert response.revocation_reason == flag
    good = x509_ocsp.load_der_ocsp_response(
        responder.respond(request_der, lambda serial: GOOD, VALIDITY))
    assert good.certificate_status == x509_ocsp.OCSPCertStatus.GOOD


def test_status_lookup_gets_each_serial_in_order(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path,
) -> None:
    request = openssl_request(files, tmp_path, certs=("second", "first"))
    asked: list[int] = []

    def status_of(serial: int) -> CertStatus:
        asked.append(serial)
        return GOOD

    responder.respond(request.read_bytes(), status_of, VALIDITY)
    assert asked == [serial_of(files["second"]), serial_of(files["first"])]
    parsed = parse_request(request.read_bytes())
    assert [cert_id.serial for cert_id in parsed.cert_ids] == asked
    assert parsed.nonce is not None  # openssl adds one by default


@pytest.mark.parametrize("junk", [
    b"", b"hello", b"\x30\x00", b"\x30\x03\x30\x01\x00", b"\x30\x05\x30\x03\x30\x01\x30",
], ids=["empty", "text", "empty-seq", "bad-tbs", "truncated"])
def test_junk_is_malformed(responder: OcspResponder, junk: bytes) -> None:
    assert responder.respond(junk, lambda serial: GOOD, VALIDITY) == MALFORMED_REQUEST
    with pytest.raises(MalformedOcspRequest):
        parse_request(junk)
    response = x509_ocsp.load_der_ocsp_response(MALFORMED_REQUEST)
    assert response.response_status == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_and_padded_requests_are_malformed(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path,
) -> None:
    request = openssl_request(files, tmp_path).read_bytes()
    for bad in (request[:-1], request + b"\x00", request[:20]):
        assert responder.respond(bad, lambda serial: GOOD, VALIDITY) == MALFORMED_REQUEST


def test_request_without_certificates_is_malformed(responder: OcspResponder) -> None:
    empty_list = bytes.fromhex("3004" "3002" "3000")  # OCSPRequest{TBSRequest{requestList{}}}
    assert responder.respond(empty_list, lambda serial: GOOD, VALIDITY) == MALFORMED_REQUEST


def test_other_issuer_is_unauthorized(
    make_ca: Callable[[str, int], CertificateAuthority], ca_type: tuple[str, int],
    ca_files: Callable[[str, int], Path], client_key: Callable[[str, int], ClientKey],
    files: dict[str, Path], tmp_path: Path,
) -> None:
    other_type = ("rsa", 2048) if ca_type != ("rsa", 2048) else ("ec", 256)
    other = make_ca(*other_type)
    foreign: IssuedCertificate = other.issue("thing-x", client_key("ec", 256), VALIDITY)
    foreign_files = {"ca": ca_files(*other_type), "first": tmp_path / "foreign.pem"}
    foreign_files["first"].write_text(foreign.certificate_pem)
    mine = make_ca(*ca_type)
    responder = OcspResponder(mine.ca_certificate, mine.signer)
    for digest in ("-sha1", "-sha256"):
        request = openssl_request(foreign_files, tmp_path, digest)
        looked_up: list[int] = []
        answer = responder.respond(request.read_bytes(),
                                   lambda serial: looked_up.append(serial) or GOOD, VALIDITY)
        assert answer == UNAUTHORIZED
        assert looked_up == []
        response = x509_ocsp.load_der_ocsp_response(answer)
        assert response.response_status == x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    # One foreign CertID among ours: the request is not ours to answer.
    both = tmp_path / "both.der"
    result = openssl("ocsp", "-issuer", str(files["ca"]), "-cert", str(files["first"]),
                     "-issuer", str(foreign_files["ca"]), "-cert", str(foreign_files["first"]),
                     "-reqout", str(both))
    assert result.returncode == 0, result.stderr
    assert responder.respond(both.read_bytes(), lambda serial: GOOD, VALIDITY) == UNAUTHORIZED


def test_same_name_other_key_is_unauthorized(
    responder: OcspResponder, ca: CertificateAuthority, files: dict[str, Path],
    tmp_path: Path,
) -> None:
    request = parse_request(openssl_request(files, tmp_path).read_bytes())
    cert_id = request.cert_ids[0]
    assert responder.issued_here(cert_id)
    flipped = bytes([cert_id.issuer_key_hash[0] ^ 1]) + cert_id.issuer_key_hash[1:]
    assert not responder.issued_here(
        type(cert_id)(cert_id.hash_algorithm, cert_id.issuer_name_hash, flipped,
                      cert_id.serial, cert_id.der))


def test_openssl_text_shows_times_and_responder(
    responder: OcspResponder, ca: CertificateAuthority, files: dict[str, Path],
    tmp_path: Path,
) -> None:
    request = openssl_request(files, tmp_path)
    now = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    response_file = tmp_path / "response.der"
    response_file.write_bytes(responder.respond(request.read_bytes(), lambda s: GOOD,
                                                VALIDITY, now=now))
    result = openssl("ocsp", "-respin", str(response_file), "-resp_text", "-noverify")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    key_hash = hashlib.sha1(ca.ca_certificate.public_key["public_key"].contents[1:]).hexdigest()
    assert re.search(r"Responder Id: " + key_hash.upper(), text), text
    assert "Produced At: Dec  1 10:00:00 2026 GMT" in text, text
    assert "This Update: Dec  1 10:00:00 2026 GMT" in text, text
    assert "Next Update: Dec  1 11:00:00 2026 GMT" in text, text
    assert "Signature Algorithm: " + (
        "sha256WithRSAEncryption" if ca.signer.scheme.name.endswith("rsa")
        else "ecdsa-with-SHA256") in text, text
    assert "Certificate:" not in text, text
