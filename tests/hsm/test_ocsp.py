"""OCSP (SPEC section 13): responses signed in the HSM for requests made by openssl and
cryptography, checked by ``openssl ocsp`` and by cryptography's OCSP parser."""

import base64
import hashlib
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm.authority import CertificateAuthority
from hsm.certificate import IssuedCertificate
from hsm.client_keys import ClientKey
from hsm.ocsp import (
    GOOD,
    MALFORMED_REQUEST,
    UNAUTHORIZED,
    UNKNOWN,
    CertStatus,
    OcspResponder,
    revoked,
)
from hsm.ocsp_request import (
    MAX_CERT_IDS,
    MAX_REQUEST_BYTES,
    MalformedOcspRequest,
    decode_get_request,
    parse_request,
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
                  trust: str, certs: tuple[str, ...] = ("first",),
                  digest: str = "-sha1") -> str:
    """What ``openssl ocsp -respin`` says of the response's statuses, after it verified the
    signature and compared the nonce with the request's.

    openssl ignores ``-reqin`` when given ``-cert``, so the nonce is checked by a first run
    with the request and the statuses are printed by a second one with the certificates.
    """
    response_file = tmp_path / "response.der"
    response_file.write_bytes(response)
    # The response carries no certificate: a verifier finds the CA among the certificates it
    # already has (-VAfile, or -verify_other as nginx passes the chain).
    trusted = [trust, str(files["ca"])]
    if trust == "-CAfile":
        trusted += ["-verify_other", str(files["ca"])]
    common = ["ocsp", "-respin", str(response_file), *trusted]
    result = openssl(*common, "-reqin", str(request))
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Response verify OK" in said, said
    assert "WARNING" not in said, said
    args = [*common, "-issuer", str(files["ca"]), "-no_nonce", digest]
    for name in certs:
        args += ["-cert", str(files[name])]
    result = openssl(*args)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "Response verify OK" in said, said
    return result.stdout


def always(status: CertStatus) -> Callable[[int], CertStatus]:
    return lambda serial: status


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
    said = openssl_check(files, request, response, tmp_path, trust, ("first", "second"),
                         digest)
    assert f"{files['first']}: good" in said, said
    assert f"{files['second']}: revoked" in said, said
    assert "Reason: keyCompromise" in said, said
    assert "Revocation Time: Mar  4 05:06:07 2026 GMT" in said, said

    unknown = responder.respond(request.read_bytes(), always(UNKNOWN), VALIDITY)
    said = openssl_check(files, request, unknown, tmp_path, trust, ("first", "second"),
                         digest)
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
    request_der = builder.build().public_bytes(Encoding.DER)
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
        cert, ca_cert, hashes.SHA256()).build().public_bytes(Encoding.DER)
    expected = {
        None: None, "unspecified": None,
        "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
        "ca_compromise": x509.ReasonFlags.ca_compromise,
    }
    for reason, flag in expected.items():
        status = revoked(REVOKED_AT, reason)
        der = responder.respond(request_der, always(status), VALIDITY)
        response = x509_ocsp.load_der_ocsp_response(der)
        assert response.certificate_status == x509_ocsp.OCSPCertStatus.REVOKED
        assert response.revocation_reason == flag
    good = x509_ocsp.load_der_ocsp_response(
        responder.respond(request_der, always(GOOD), VALIDITY))
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
    assert responder.respond(junk, always(GOOD), VALIDITY) == MALFORMED_REQUEST
    with pytest.raises(MalformedOcspRequest):
        parse_request(junk)
    response = x509_ocsp.load_der_ocsp_response(MALFORMED_REQUEST)
    assert response.response_status == x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_and_padded_requests_are_malformed(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path,
) -> None:
    request = openssl_request(files, tmp_path).read_bytes()
    for bad in (request[:-1], request + b"\x00", request[:20]):
        assert responder.respond(bad, always(GOOD), VALIDITY) == MALFORMED_REQUEST


def test_request_without_certificates_is_malformed(responder: OcspResponder) -> None:
    empty_list = bytes.fromhex("3004" "3002" "3000")  # OCSPRequest{TBSRequest{requestList{}}}
    assert responder.respond(empty_list, always(GOOD), VALIDITY) == MALFORMED_REQUEST


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
    looked_up: list[int] = []

    def status_of(serial: int) -> CertStatus:
        looked_up.append(serial)
        return GOOD

    for digest in ("-sha1", "-sha256"):
        request = openssl_request(foreign_files, tmp_path, digest)
        answer = responder.respond(request.read_bytes(), status_of, VALIDITY)
        assert answer == UNAUTHORIZED
        response = x509_ocsp.load_der_ocsp_response(answer)
        assert response.response_status == x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert looked_up == []
    # One foreign CertID among ours: the request is not ours to answer.
    both = tmp_path / "both.der"
    result = openssl("ocsp", "-issuer", str(files["ca"]), "-cert", str(files["first"]),
                     "-issuer", str(foreign_files["ca"]), "-cert", str(foreign_files["first"]),
                     "-reqout", str(both))
    assert result.returncode == 0, result.stderr
    assert responder.respond(both.read_bytes(), always(GOOD), VALIDITY) == UNAUTHORIZED


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
    response_file.write_bytes(responder.respond(request.read_bytes(), always(GOOD),
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


def test_parser_agrees_with_asn1crypto(
    files: dict[str, Path], ca: CertificateAuthority, tmp_path: Path,
) -> None:
    """The hand walk of parse_request reads what a full asn1crypto load reads."""
    ca_cert = x509.load_pem_x509_certificate(ca.ca_pem.encode())
    cert = x509.load_pem_x509_certificate(files["first"].read_bytes())
    requests = [
        openssl_request(files, tmp_path, *options, certs=certs).read_bytes()
        for options in (("-sha1",), ("-sha256", "-no_nonce"), ("-sha384",), ("-sha512",))
        for certs in (("first",), ("first", "second"))
    ] + [
        x509_ocsp.OCSPRequestBuilder().add_certificate(cert, ca_cert, digest)
        .add_extension(x509.OCSPNonce(b"n" * 32), critical=False).build()
        .public_bytes(Encoding.DER)
        for digest in (hashes.SHA1(), hashes.SHA224(), hashes.SHA256())
    ]
    for data in requests:
        parsed = parse_request(data)
        full = asn1_ocsp.OCSPRequest.load(data)
        expected = [item["req_cert"] for item in full["tbs_request"]["request_list"]]
        assert [c.serial for c in parsed.cert_ids] == [
            c["serial_number"].native for c in expected]
        assert [c.der for c in parsed.cert_ids] == [c.dump() for c in expected]
        assert [(c.issuer_name_hash, c.issuer_key_hash) for c in parsed.cert_ids] == [
            (c["issuer_name_hash"].native, c["issuer_key_hash"].native) for c in expected]
        assert [c.hash_algorithm for c in parsed.cert_ids] == [
            c["hash_algorithm"]["algorithm"].native
            if c["hash_algorithm"]["algorithm"].native != "sha224"
            else c["hash_algorithm"]["algorithm"].dump()[2:].hex() for c in expected]
        nonce = full.nonce_value
        assert parsed.nonce == (None if nonce is None else nonce.dump())


_MANGLED_BASE: dict[Path, bytes] = {}


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mangled_requests_never_crash(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path, data: st.DataObject,
) -> None:
    """Any byte flipped, cut or inserted: a response or malformedRequest, never an exception."""
    if files["first"] not in _MANGLED_BASE:
        _MANGLED_BASE[files["first"]] = openssl_request(files, tmp_path).read_bytes()
    request = bytearray(_MANGLED_BASE[files["first"]])
    position = data.draw(st.integers(0, len(request) - 1))
    action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if action == "flip":
        request[position] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        del request[position:]
    else:
        request[position:position] = data.draw(st.binary(min_size=1, max_size=4))
    answer = responder.respond(bytes(request), always(GOOD), VALIDITY)
    status = x509_ocsp.load_der_ocsp_response(answer).response_status
    assert status in (x509_ocsp.OCSPResponseStatus.SUCCESSFUL,
                      x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
                      x509_ocsp.OCSPResponseStatus.UNAUTHORIZED)


def test_limits(responder: OcspResponder, files: dict[str, Path], tmp_path: Path) -> None:
    assert responder.respond(b"\x30" * (MAX_REQUEST_BYTES + 1), always(GOOD),
                             VALIDITY) == MALFORMED_REQUEST
    one = asn1_ocsp.OCSPRequest.load(openssl_request(files, tmp_path, "-no_nonce").read_bytes())
    single = one["tbs_request"]["request_list"][0]
    for count, accepted in ((MAX_CERT_IDS, True), (MAX_CERT_IDS + 1, False)):
        many = asn1_ocsp.OCSPRequest({"tbs_request": {"request_list": [single] * count}}).dump()
        answer = responder.respond(many, always(GOOD), VALIDITY)
        if accepted:
            responses = list(x509_ocsp.load_der_ocsp_response(answer).responses)
            assert len(responses) == count
        else:
            assert answer == MALFORMED_REQUEST


def test_get_form_decodes_every_escaping(
    responder: OcspResponder, files: dict[str, Path], tmp_path: Path,
) -> None:
    """RFC 6960 A.1: the path is the URL-encoded base64 of the request."""
    # Requests until the base64 holds a '/', a '+' and padding, so each escaping is exercised:
    # the nonce varies the content; with and without it, and with one to three certificate ids,
    # the length varies too (a length that is a multiple of 3 never has padding).
    variants = [(options, certs) for options in ((), ("-no_nonce",))
                for certs in (("first",), ("first", "second"), ("first", "second", "first"))]
    for attempt in range(300):
        options, certs = variants[attempt % len(variants)]
        der = openssl_request(files, tmp_path, *options, certs=certs).read_bytes()
        text = base64.b64encode(der).decode()
        if "/" in text and "+" in text and text.endswith("="):
            break
    else:
        raise AssertionError(f"no request with '/', '+' and padding in 300: last {text}")
    for path in (text, urllib.parse.quote(text, safe=""), urllib.parse.quote(text, safe="/"),
                 text.rstrip("=")):
        assert decode_get_request(path) == der
    assert parse_request(decode_get_request(urllib.parse.quote(text, safe=""))).cert_ids
    for junk in ("", "!!!", "%ZZ", "a"):
        with pytest.raises(MalformedOcspRequest):
            parse_request(decode_get_request(junk))
