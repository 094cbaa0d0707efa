"""Every method of the sync client against the real service, results checked field by field
and with openssl / pyca/cryptography."""

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs_sdk import Certificate, CertsClient, Health, NotFound, Revocation
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.fixtures.identity import IdentityFixture
from tests.sdk.checks import assert_key_matches, assert_openssl_verifies, serial_of


def _assert_record(cert: Certificate, thing_id: str, ca_pem: str) -> None:
    parsed = cert.x509()
    assert cert.thing_id == thing_id
    assert cert.serial == serial_of(cert.certificate)
    assert parsed.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == thing_id
    assert cert.expires_at == parsed.not_valid_after_utc
    assert cert.expires_at.tzinfo is not None
    assert cert.issuing_ca.strip() == ca_pem.strip()
    assert cert.ca_chain[0].strip() == ca_pem.strip()


def test_issue_ec_and_view(client: CertsClient, identity: IdentityFixture, ca_pem: str,
                           tmp_path: Path) -> None:
    thing = identity.thing_a1.id
    before = datetime.now(UTC)
    issued = client.issue(thing, key_type="ec", key_bits=384, ttl=timedelta(hours=5))
    _assert_record(issued, thing, ca_pem)
    assert (issued.private_key_type, issued.key_bits, issued.downloaded) == ("ec", 384, False)
    assert isinstance(issued.x509().public_key(), ec.EllipticCurvePublicKey)
    assert issued.private_key and issued.private_key.startswith("-----BEGIN EC PRIVATE KEY")
    assert_key_matches(issued)
    assert_openssl_verifies(issued.certificate, ca_pem, tmp_path)
    lifetime = issued.expires_at - before
    assert timedelta(hours=5) - timedelta(seconds=5) <= lifetime <= timedelta(hours=5, seconds=5)
    assert "private_key=" not in repr(issued) and "PRIVATE KEY" not in repr(issued)

    viewed = client.view(issued.serial.upper())
    assert viewed.private_key is None
    assert viewed.downloaded is False
    assert (viewed.serial, viewed.certificate, viewed.expires_at, viewed.key_bits) == (
        issued.serial, issued.certificate, issued.expires_at, 384)


def test_issue_rsa_with_string_ttl(client: CertsClient, identity: IdentityFixture,
                                   ca_pem: str, tmp_path: Path) -> None:
    issued = client.issue(identity.thing_a2.id, key_type="rsa", ttl="2h")
    _assert_record(issued, identity.thing_a2.id, ca_pem)
    assert (issued.key_type, issued.key_bits) == ("rsa", 2048)
    assert isinstance(issued.x509().public_key(), rsa.RSAPublicKey)
    assert issued.private_key and issued.private_key.startswith("-----BEGIN RSA PRIVATE KEY")
    assert_key_matches(issued)
    assert_openssl_verifies(issued.certificate, ca_pem, tmp_path)


def test_lists_page_and_filter(base_url: str, identity: IdentityFixture) -> None:
    thing = identity.thing_b1.id
    with CertsClient(base_url, identity.bob.token) as bob:
        serials = {bob.issue(thing, key_type="ec", ttl=f"{h}h").serial for h in (10, 20, 30)}
        page = bob.list_serials(thing, limit=2)
        assert (page.total, page.offset, page.limit) >= (3, 0, 2)
        assert len(page.certs) == 2 == len(page.serials)
        everything = bob.list_serials(thing, limit=200)
        assert serials <= set(everything.serials)
        expiries = [entry.expires_at for entry in everything.certs]
        assert expiries == sorted(expiries)
        assert all(entry.thing_id == thing for entry in everything.certs)
        one = sorted(serials)[0]
        assert one in bob.list_serials(thing, serial=one[:12], limit=200).serials
        soon = datetime.now(UTC) + timedelta(hours=15)
        early = bob.list_serials(thing, expires_to=soon, limit=200)
        assert all(entry.expires_at <= soon for entry in early.certs)
        late = bob.list_serials(thing, expires_from=soon, offset=0, limit=200)
        assert all(entry.expires_at >= soon for entry in late.certs)
        assert set(early.serials).isdisjoint(late.serials)

        full = bob.list_certs(thing, limit=200)
        assert full.total == everything.total
        assert [c.serial for c in full.certs] == list(everything.serials)
        assert all(c.private_key is None and c.certificate.startswith("-----BEGIN CERTIFICATE")
                   for c in full.certs)


def test_rotate_renew_revoke(client: CertsClient, identity: IdentityFixture,
                             ca_pem: str, tmp_path: Path) -> None:
    thing = identity.thing_a1.id
    first = client.issue(thing, key_type="ec", ttl="100h")
    rotated = client.rotate(first.serial, thing, key_type="rsa", key_bits=2048, ttl="3h")
    assert rotated.serial != first.serial
    assert (rotated.key_type, rotated.key_bits, rotated.downloaded) == ("rsa", 2048, False)
    assert_key_matches(rotated)
    assert_openssl_verifies(rotated.certificate, ca_pem, tmp_path)
    _assert_not_found(client, first.serial)

    # 3 h is well within the 720 h renew window: renew keeps type, size and lifetime.
    renewed = client.renew(rotated.serial)
    assert renewed.serial not in (rotated.serial, first.serial)
    assert (renewed.key_type, renewed.key_bits) == ("rsa", 2048)
    assert_key_matches(renewed)
    assert_openssl_verifies(renewed.certificate, ca_pem, tmp_path)
    _assert_not_found(client, rotated.serial)

    revocation = client.revoke(renewed.serial)
    assert isinstance(revocation, Revocation)
    assert revocation.serial == renewed.serial
    assert abs(revocation.revoked_at - datetime.now(UTC)) < timedelta(minutes=2)
    _assert_not_found(client, renewed.serial)

    crl = x509.load_der_x509_crl(client.crl_der())
    revoked = {format(entry.serial_number, "x") for entry in crl}
    assert {first.serial, rotated.serial, renewed.serial} <= revoked


def _assert_not_found(client: CertsClient, serial: str) -> None:
    try:
        client.view(serial)
    except NotFound as exc:
        assert (exc.status, exc.message) == (404, "entity not found")
    else:
        raise AssertionError(f"{serial} still viewable")


def test_download_once_with_thing_key_and_external_key(
        client: CertsClient, identity: IdentityFixture) -> None:
    a1 = identity.thing_a1
    issued = client.issue(a1.id, key_type="ec")
    got = client.download(issued.serial, a1.key)
    assert (got.serial, got.thing_id, got.certificate, got.downloaded) == (
        issued.serial, a1.id, issued.certificate, True)
    assert got.private_key == issued.private_key
    assert_key_matches(got)
    assert client.view(issued.serial).downloaded is True

    other = client.issue(a1.id, key_type="ec")
    assert a1.external_key
    external = client.download(other.serial, a1.external_key, external=True)
    assert external.serial == other.serial
    assert_key_matches(external)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_crl_der_and_pem(client: CertsClient, ca_pem: str, tmp_path: Path) -> None:
    der_bytes = client.crl_der()
    pem_text = client.crl_pem()
    der = x509.load_der_x509_crl(der_bytes)
    pem = x509.load_pem_x509_crl(pem_text.encode())
    assert _crl_number(der) <= _crl_number(pem)
    ca = x509.load_pem_x509_certificate(ca_pem.encode())
    assert der.issuer == pem.issuer == ca.subject
    assert der.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert pem.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    (tmp_path / "ca.pem").write_text(ca_pem)
    (tmp_path / "crl.der").write_bytes(der_bytes)
    checked = subprocess.run(["openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "crl.der"),
                              "-CAfile", str(tmp_path / "ca.pem"), "-noout"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0 and "verify OK" in checked.stderr + checked.stdout, checked


def test_health(client: CertsClient) -> None:
    health = client.health()
    assert isinstance(health, Health)
    assert health.ok is True
    assert (health.status, health.description) == ("pass", "certs service")
    assert health.checks["hsm"]["status"] == "pass"
    assert health.checks["database"]["status"] == "pass"


def test_ca_pem(client: CertsClient, identity: IdentityFixture, ca_pem: str) -> None:
    chain = client.ca_pem()
    certificates = x509.load_pem_x509_certificates(chain.encode())
    assert certificates[0] == x509.load_pem_x509_certificate(ca_pem.encode())
    issued = client.issue(identity.thing_a1.id, key_type="ec")
    assert chain.strip() == issued.chain_pem().strip()
    assert issued.x509().issuer == certificates[0].subject
