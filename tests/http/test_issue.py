"""POST /certs: the issue body field by field, defaults, key types and sizes, ttl forms."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import repository
from authority.records import new_record
from authority.requests import IssueRequest
from tests.http.conftest import parse_time

CLOCK_SKEW = timedelta(seconds=60)


async def test_issue_ec_body_and_profile(api):
    thing = api.thing_id("thing-a1")
    before = datetime.now(UTC).replace(microsecond=0)
    response = await api.client.post(
        "/certs", json={"thing_id": thing, "key_type": "ec", "key_bits": 256, "ttl": "720h"},
        headers=api.auth("alice"))
    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    cert = api.check_issued(body, thing, "ec", 256)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"

    # validity: notBefore = now - 60 s, notAfter = now + ttl (SPEC section 5)
    ttl = timedelta(hours=720)
    assert before + ttl <= cert.not_valid_after_utc <= after + ttl
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == ttl + CLOCK_SKEW

    # profile: issuer, extensions, signature
    assert cert.version == x509.Version.v3
    assert cert.issuer == api.ca.subject
    assert cert.signature_hash_algorithm.name == "sha256"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign and not usage.value.crl_sign
    extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = api.ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


async def test_issue_defaults_are_rsa_2048_for_2048h(sqlite_api):
    """The one RSA issuance: no key_type, key_bits or ttl in the request."""
    thing = sqlite_api.thing_id("thing-a2")
    started = datetime.now(UTC).replace(microsecond=0)
    body = await sqlite_api.issue(thing="thing-a2", key_type=None)
    cert = sqlite_api.check_issued(body, thing, "rsa", 2048)
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert body["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == timedelta(hours=2048) + CLOCK_SKEW
    assert started + timedelta(hours=2048) <= parse_time(body["expires_at"])
    assert parse_time(body["expires_at"]) <= datetime.now(UTC) + timedelta(hours=2048)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment
    assert cert.signature_hash_algorithm.name == "sha256"

    view = await sqlite_api.view(body["serial"])
    assert view.status_code == 200, view.text
    assert view.json()["key_type"] == view.json()["private_key_type"] == "rsa"
    assert view.json()["key_bits"] == 2048


@pytest.mark.parametrize(
    ("key_type", "key_bits", "curve"),
    [("ec", None, "secp256r1"), ("ecdsa", None, "secp256r1"), ("ecdsa", 384, "secp384r1"),
     ("ec", 521, "secp521r1"), ("ec", 224, "secp224r1"), ("EC", 256, "secp256r1")],
)
async def test_issue_ec_sizes_and_ecdsa_synonym(sqlite_api, key_type, key_bits, curve):
    thing = sqlite_api.thing_id("thing-a1")
    body = await sqlite_api.issue(key_type=key_type, key_bits=key_bits, ttl="10h")
    bits = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521, "secp224r1": 224}[curve]
    cert = sqlite_api.check_issued(body, thing, "ec", bits)
    assert cert.public_key().curve.name == curve
    assert cert.signature_hash_algorithm.name == "sha256"  # the CA's key is P-256


@pytest.mark.parametrize(
    ("ttl", "lifetime"),
    [("30m", timedelta(minutes=30)), ("1h30m", timedelta(hours=1, minutes=30)),
     ("24", timedelta(hours=24)), ("8760h", timedelta(hours=8760)),
     ("90s", timedelta(seconds=90))],
)
async def test_issue_ttl_forms(sqlite_api, ttl, lifetime):
    started = datetime.now(UTC).replace(microsecond=0)
    body = await sqlite_api.issue(ttl=ttl)
    cert = sqlite_api.check_issued(body, sqlite_api.thing_id("thing-a1"), "ec", 256)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == lifetime + CLOCK_SKEW
    expires = parse_time(body["expires_at"])
    assert started + lifetime <= expires <= datetime.now(UTC) + lifetime


async def test_issue_ignores_unknown_fields(sqlite_api):
    body = await sqlite_api.issue(ttl="1h", comment="ignored", extra={"a": [1, 2]})
    sqlite_api.check_issued(body, sqlite_api.thing_id("thing-a1"), "ec", 256)


async def test_issue_accepts_json_with_charset(sqlite_api):
    thing = sqlite_api.thing_id("thing-a1")
    response = await sqlite_api.client.post(
        "/certs", content=f'{{"thing_id": "{thing}", "key_type": "ec", "ttl": "1h"}}',
        headers={**sqlite_api.auth("alice"),
                 "Content-Type": "application/json; charset=utf-8"})
    assert response.status_code == 201, response.text
    sqlite_api.check_issued(response.json(), thing, "ec", 256)


async def test_each_issue_has_a_fresh_serial_and_key(sqlite_api):
    bodies = [await sqlite_api.issue(ttl="1h") for _ in range(3)]
    assert len({body["serial"] for body in bodies}) == 3
    assert len({body["private_key"] for body in bodies}) == 3


async def test_concurrent_issues_are_each_stored_and_returned_once(api):
    """Many EC requests at once share batches: every one gets its own certificate, for its own
    thing and lifetime, and it is stored."""
    requests = [("thing-a1" if i % 2 else "thing-a2", i % 5 + 1) for i in range(48)]
    started = datetime.now(UTC)
    bodies = await asyncio.gather(*(api.issue(thing=thing, ttl=f"{hours}h")
                                    for thing, hours in requests))
    assert len({body["serial"] for body in bodies}) == 48
    assert len({body["private_key"] for body in bodies}) == 48
    for (thing, hours), body in zip(requests, bodies, strict=True):
        cert = api.check_issued(body, api.thing_id(thing), "ec", 256)
        lifetime = cert.not_valid_after_utc - started
        assert timedelta(hours=hours) - timedelta(minutes=1) < lifetime \
            < timedelta(hours=hours) + timedelta(minutes=1)
    for thing in ("thing-a1", "thing-a2"):
        listed = await api.client.get(f"/things/{api.thing_id(thing)}/serials?limit=100",
                                      headers=api.auth("alice"))
        assert listed.status_code == 200
        assert set(listed.json()["serials"]) == {
            body["serial"] for (owner, _), body in zip(requests, bodies, strict=True)
            if owner == thing}


async def test_a_batch_with_a_taken_serial_is_stored_one_by_one(components):
    """Only the certificate whose serial exists fails; the rest of its batch is stored."""
    service, store = components.service, components.store
    request = IssueRequest("thing-x", "ec", 256, timedelta(hours=1))
    first, second, third = (service._sign(request, "thing-x") for _ in range(3))
    store.save(new_record("thing-x", first))
    outcomes = service._save_all([new_record("thing-x", issued)
                                  for issued in (second, first, third)])
    assert isinstance(outcomes[1], repository.Conflict)
    for outcome, issued in ((outcomes[0], second), (outcomes[2], third)):
        assert isinstance(outcome, repository.Certificate)
        assert outcome.serial == issued.serial_hex
        assert store.get(issued.serial_hex).certificate_pem == issued.certificate_pem
