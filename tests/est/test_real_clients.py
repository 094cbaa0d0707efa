"""EST enroll and re-enroll as an RFC 7030 device does it: `openssl req` makes the key and the
base64 DER request, `curl` posts it through nginx (TLS, client certificate), `openssl pkcs7`
reads the answer and `openssl verify -purpose sslclient` checks the certificate. The service's
own API and CRL then show what happened (listed, viewable, the old one revoked)."""

import base64
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID

from tests.est.conftest import HEADER, EstStack
from tests.fixtures.identity import IdentityFixture

CONTENT = "-H 'Content-Type: application/pkcs10'"
CURL = 'curl -sS --cacert "$TLS_CA"'


def _csr(est: EstStack, name: str, newkey: str = "ec -pkeyopt ec_paramgen_curve:prime256v1"
         ) -> None:
    est.sh(f"openssl req -new -newkey {newkey} -nodes -keyout {name}.key "
           f"-subj '/CN=the-device-says-{name}/O=Elsewhere' -outform DER | base64 > {name}.b64")


def _read_answer(est: EstStack, name: str) -> x509.Certificate:
    """The certs-only answer `{name}.p7.b64` opened by openssl, and the certificate verified."""
    est.sh(f"base64 -d {name}.p7.b64 | openssl pkcs7 -inform DER -print_certs -out {name}.crt\n"
           f'openssl verify -CAfile "$CA" -purpose sslclient {name}.crt')
    certificates = x509.load_pem_x509_certificates((est.workdir / f"{name}.crt").read_bytes())
    assert len(certificates) == 1
    return certificates[0]


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _check(est: EstStack, certificate: x509.Certificate, name: str, thing_id: str) -> None:
    """`CN=<thing>` only, exactly the device's key, the default lifetime."""
    assert [(a.oid, a.value) for a in certificate.subject] == [(NameOID.COMMON_NAME, thing_id)]
    device_key = load_pem_private_key((est.workdir / f"{name}.key").read_bytes(), None)
    assert _spki(certificate.public_key()) == _spki(device_key.public_key())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == timedelta(hours=2048, seconds=60)


def _status(est: EstStack, name: str, curl_args: str, route: str,
            env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a curl request whose failure is the point."""
    done = est.sh(f"{CURL} -o {name}.out -D {name}.headers -w '%{{http_code}}' "
                  f"{curl_args} \"$EST/{route}\"", env=env)
    headers = (est.workdir / f"{name}.headers").read_text()
    content_type = next((line.split(":", 1)[1].strip() for line in headers.splitlines()
                         if line.lower().startswith("content-type:")), "")
    return int(done.stdout), content_type, (est.workdir / f"{name}.out").read_text()


def _enroll(est: EstStack, name: str, thing: str, key: str) -> x509.Certificate:
    _csr(est, name)
    est.sh(f'{CURL} --fail-with-body --data-binary @{name}.b64 {CONTENT} -u "$THING:$KEY" '
           f'-D {name}.headers -o {name}.p7.b64 "$EST/simpleenroll"',
           env={"THING": thing, "KEY": key})
    headers = (est.workdir / f"{name}.headers").read_text().lower()
    assert "content-type: application/pkcs7-mime; smime-type=certs-only" in headers
    return _read_answer(est, name)


def _serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def test_cacerts_is_the_ca_chain(est: EstStack) -> None:
    est.sh(f'{CURL} --fail-with-body "$EST/cacerts" | base64 -d | '
           "openssl pkcs7 -inform DER -print_certs -out cacerts.pem")
    got = x509.load_pem_x509_certificates((est.workdir / "cacerts.pem").read_bytes())
    assert got == x509.load_pem_x509_certificates(est.ca.read_bytes())
    attributes = est.sh(f'{CURL} -o /dev/null -w "%{{http_code}}" "$EST/csrattrs"')
    assert attributes.stdout == "204"


def test_enroll_then_reenroll(est: EstStack, identity: IdentityFixture) -> None:
    thing = identity.thing_a1
    first = _enroll(est, "first", thing.id, thing.key)
    _check(est, first, "first", thing.id)
    bearer = {"Authorization": f"Bearer {identity.alice.token}"}
    with est.api() as api:
        listed = api.get(f"/things/{thing.id}/serials", params={"limit": 200}, headers=bearer)
        assert _serial(first) in listed.json()["serials"]
        viewed = api.get(f"/certs/{_serial(first)}", headers=bearer).json()
        assert (viewed["private_key_type"], viewed["key_bits"]) == ("ec", 256)

    # The device renews with the certificate it holds, and a new key of its own.
    _csr(est, "second")
    est.sh(f"{CURL} --fail-with-body --cert first.crt --key first.key "
           f'--data-binary @second.b64 {CONTENT} -o second.p7.b64 "$EST/simplereenroll"')
    second = _read_answer(est, "second")
    _check(est, second, "second", thing.id)
    assert second.serial_number != first.serial_number
    with est.api() as api:
        assert api.get(f"/certs/{_serial(first)}", headers=bearer).status_code == 404
        assert api.get(f"/certs/{_serial(second)}", headers=bearer).status_code == 200
        crl = x509.load_der_x509_crl(api.get("/crl").content)
    entry = crl.get_revoked_certificate_by_serial_number(first.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.superseded

    # The replaced certificate cannot be used again.
    _csr(est, "third")
    status, content_type, body = _status(
        est, "third", f"--cert first.crt --key first.key --data-binary @third.b64 {CONTENT}",
        "simplereenroll")
    assert (status, content_type.split(";")[0]) == (403, "text/plain"), body


def test_enroll_with_the_thing_scheme_and_an_rsa_key(est: EstStack,
                                                     identity: IdentityFixture) -> None:
    thing = identity.thing_b1
    _csr(est, "rsa", "rsa:3072")
    est.sh(f"{CURL} --fail-with-body --data-binary @rsa.b64 {CONTENT} "
           f'-H "Authorization: Thing $KEY" -o rsa.p7.b64 "$EST/simpleenroll"',
           env={"KEY": thing.key})
    certificate = _read_answer(est, "rsa")
    _check(est, certificate, "rsa", thing.id)
    assert certificate.public_key().key_size == 3072  # type: ignore[union-attr]


@pytest.mark.parametrize(("credentials", "expect"), [
    ("", 401),
    ('-u "$THING:"', 401),
    ('-u "$THING:nope-not-a-key"', 401),
    ('-u "someone-else:$KEY"', 403),
    ('-u ":$KEY"', 200),
])
def test_enroll_credentials(est: EstStack, identity: IdentityFixture, credentials: str,
                            expect: int) -> None:
    thing = identity.thing_a2
    _csr(est, "creds")
    status, content_type, body = _status(
        est, "creds", f"--data-binary @creds.b64 {CONTENT} {credentials}", "simpleenroll",
        {"THING": thing.id, "KEY": thing.key})
    assert status == expect, body
    if expect != 200:
        assert content_type.split(";")[0] == "text/plain"
        headers = (est.workdir / "creds.headers").read_text()
        if expect == 401:
            assert 'www-authenticate: basic realm="certs"' in headers.lower()
        assert thing.key not in body


def _foreign_client_certificate(est: EstStack) -> None:
    """A CA of its own and a client certificate from it, made with openssl."""
    est.sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout other-ca.key -out other-ca.crt -days 2 -subj /CN=Other-CA\n"
           "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout foreign.key -out foreign.csr -subj /CN=7a1a1000-0000-4000-8000-0000000000a1\n"
           "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
           "openssl x509 -req -in foreign.csr -CA other-ca.crt -CAkey other-ca.key "
           "-CAcreateserial -days 1 -extfile client.ext -out foreign.crt")


def test_reenroll_refuses_a_foreign_or_missing_certificate(est: EstStack) -> None:
    _foreign_client_certificate(est)
    _csr(est, "renew")
    status, content_type, body = _status(
        est, "foreign", f"--cert foreign.crt --key foreign.key --data-binary @renew.b64 {CONTENT}",
        "simplereenroll")
    assert (status, content_type.split(";")[0]) == (403, "text/plain"), body
    status, _, body = _status(est, "none", f"--data-binary @renew.b64 {CONTENT}",
                              "simplereenroll")
    assert status == 401, body
    assert 'www-authenticate: basic realm="certs"' in \
        (est.workdir / "none.headers").read_text().lower()


def _escaped(certificate: Path) -> str:
    return quote(certificate.read_text(), safe="")


def test_a_forged_certificate_header_is_ignored(est: EstStack, identity: IdentityFixture
                                               ) -> None:
    thing = identity.thing_a1
    held = _enroll(est, "held", thing.id, thing.key)
    _csr(est, "forged")
    forged = (est.workdir / "forged.b64").read_bytes()
    with est.api() as api:
        # Straight to the service, from 127.0.0.1: not a trusted proxy.
        direct = api.post("/.well-known/est/simplereenroll", content=forged,
                          headers={"Content-Type": "application/pkcs10",
                                   HEADER: _escaped(est.workdir / "held.crt")})
        assert direct.status_code == 401, direct.text
        assert direct.headers["content-type"].startswith("text/plain")
    # Through nginx without a client certificate: nginx drops the client's own header.
    status, _, body = _status(
        est, "through", f"--data-binary @forged.b64 {CONTENT} "
                        f"-H '{HEADER}: {_escaped(est.workdir / 'held.crt')}'",
        "simplereenroll")
    assert status == 401, body
    with est.api() as api:
        still = api.get(f"/certs/{_serial(held)}",
                        headers={"Authorization": f"Bearer {identity.alice.token}"})
        assert still.status_code == 200


def test_a_forwarded_for_header_does_not_make_a_caller_trusted(
        est: EstStack, identity: IdentityFixture) -> None:
    thing = identity.thing_a1
    _enroll(est, "spoofed", thing.id, thing.key)
    _csr(est, "spoof")
    with est.api() as api:
        direct = api.post("/.well-known/est/simplereenroll",
                          content=(est.workdir / "spoof.b64").read_bytes(),
                          headers={"Content-Type": "application/pkcs10",
                                   "X-Forwarded-For": "127.0.0.2",
                                   HEADER: _escaped(est.workdir / "spoofed.crt")})
    assert direct.status_code == 401, direct.text


def test_no_thing_key_in_the_logs(est: EstStack, identity: IdentityFixture) -> None:
    """Runs after the others of the module: Basic credentials and keys were sent many times."""
    logs = est.served.output() + est.nginx.access_log + est.nginx.error_log
    assert "/.well-known/est/simpleenroll" in logs
    for thing in identity.things.values():
        assert thing.key not in logs
        assert base64.b64encode(f"{thing.id}:{thing.key}".encode()).decode() not in logs
    assert "PRIVATE KEY" not in logs
