"""PUT /certs/{serial} (renew) and POST /certs/{serial}/rotate."""

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography import x509

from tests.http.conftest import parse_time


def _lifetime(body) -> timedelta:
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    return cert.not_valid_after_utc - cert.not_valid_before_utc


async def _renew(api, serial: str, user: str = "alice"):
    return await api.client.put(f"/certs/{serial}", headers=api.auth(user))


async def test_renew_inside_the_window(api):
    thing = api.thing_id("thing-a1")
    old = await api.issue(ttl="100h", key_bits=384)  # expires within the 720h window
    started = datetime.now(UTC).replace(microsecond=0)
    response = await _renew(api, old["serial"])
    assert response.status_code == 201, response.text
    new = response.json()
    api.check_issued(new, thing, "ec", 384)  # same key type and size
    assert new["serial"] != old["serial"]
    assert new["private_key"] != old["private_key"]
    assert new["certificate"] != old["certificate"]
    assert abs(_lifetime(new) - _lifetime(old)) <= timedelta(seconds=2)
    expires = parse_time(new["expires_at"])
    assert started + timedelta(hours=100) - timedelta(seconds=2) <= expires
    assert expires <= datetime.now(UTC) + timedelta(hours=100) + timedelta(seconds=2)

    gone = await api.view(old["serial"])
    assert (gone.status_code, gone.json()) == (404, {"error": "entity not found"})
    assert old["serial"] in await api.crl_serials()
    assert new["serial"] not in await api.crl_serials()
    view = await api.view(new["serial"])
    assert view.status_code == 200 and view.json()["downloaded"] is False
    listed = await api.client.get(f"/things/{thing}/serials", headers=api.auth("alice"))
    assert listed.json()["serials"] == [new["serial"]]
    again = await _renew(api, old["serial"])
    assert (again.status_code, again.json()) == (404, {"error": "entity not found"})

    # the device gets the new key once
    download = await api.download(new["serial"], api.identity.thing_a1.key)
    assert download.status_code == 200, download.text
    assert download.json()["private_key"] == new["private_key"]


async def test_renew_before_the_window_is_refused(api):
    old = await api.issue(ttl="721h")
    response = await _renew(api, old["serial"])
    assert (response.status_code, response.json()) == \
        (400, {"error": "certificate not eligible for renewal yet"})
    # nothing changed
    assert (await api.view(old["serial"])).status_code == 200
    assert old["serial"] not in await api.crl_serials()


async def test_renew_of_an_expired_certificate(sqlite_api):
    thing = sqlite_api.thing_id("thing-a2")
    # Renewal keeps the 3 s lifetime and notAfter is cut to the second, so the new certificate
    # stays valid for at least 2 s: time enough for openssl to check it on a loaded machine
    # (with 1 s it could expire before the check).
    old = await sqlite_api.issue(thing="thing-a2", ttl="3s")
    await asyncio.sleep(3.2)
    assert parse_time(old["expires_at"]) < datetime.now(UTC)
    response = await _renew(sqlite_api, old["serial"])
    assert response.status_code == 201, response.text
    new = response.json()
    sqlite_api.check_issued(new, thing, "ec", 256)
    assert new["serial"] != old["serial"]
    assert (await sqlite_api.view(old["serial"])).status_code == 404


async def test_rotate_with_new_parameters(api):
    thing = api.thing_id("thing-a1")
    old = await api.issue(ttl="2000h")  # far from the renewal window: rotate works any time
    started = datetime.now(UTC).replace(microsecond=0)
    response = await api.client.post(
        f"/certs/{old['serial']}/rotate",
        json={"thing_id": thing, "key_type": "ecdsa", "key_bits": 521, "ttl": "50h"},
        headers=api.auth("alice"))
    assert response.status_code == 201, response.text
    new = response.json()
    cert = api.check_issued(new, thing, "ec", 521)
    assert cert.public_key().curve.name == "secp521r1"
    assert new["serial"] != old["serial"]
    assert _lifetime(new) == timedelta(hours=50, seconds=60)
    assert started + timedelta(hours=50) <= parse_time(new["expires_at"])

    gone = await api.view(old["serial"])
    assert (gone.status_code, gone.json()) == (404, {"error": "entity not found"})
    assert old["serial"] in await api.crl_serials()
    listed = await api.client.get(f"/things/{thing}/serials", headers=api.auth("alice"))
    assert listed.json()["serials"] == [new["serial"]]


async def test_rotate_defaults(sqlite_api):
    """Rotate takes the issue body: only thing_id is needed (the default ttl applies)."""
    thing = sqlite_api.thing_id("thing-a1")
    old = await sqlite_api.issue(ttl="10h")
    response = await sqlite_api.client.post(
        f"/certs/{old['serial']}/rotate",
        json={"thing_id": thing, "key_type": "ec"}, headers=sqlite_api.auth("carol"))
    assert response.status_code == 201, response.text
    assert _lifetime(response.json()) == timedelta(hours=2048, seconds=60)


async def test_rotate_with_another_thing_id_is_forbidden(sqlite_api):
    old = await sqlite_api.issue(ttl="10h")
    for thing in ("thing-a2", "thing-b1"):
        response = await sqlite_api.client.post(
            f"/certs/{old['serial']}/rotate",
            json={"thing_id": sqlite_api.thing_id(thing), "key_type": "ec"},
            headers=sqlite_api.auth("alice"))
        assert (response.status_code, response.json()) == \
            (403, {"error": "failed to perform authorization over the entity"})
    assert (await sqlite_api.view(old["serial"])).status_code == 200
    assert old["serial"] not in await sqlite_api.crl_serials()


async def test_rotate_unknown_serial(sqlite_api):
    response = await sqlite_api.client.post(
        "/certs/abcdef0123456789/rotate", json={"thing_id": sqlite_api.thing_id("thing-a1")},
        headers=sqlite_api.auth("alice"))
    assert (response.status_code, response.json()) == (404, {"error": "entity not found"})


async def test_concurrent_renewals_replace_once(sqlite_api):
    """Two renewals of one certificate: one new certificate; the other finds it gone."""
    thing = sqlite_api.thing_id("thing-b1")
    old = await sqlite_api.issue(user="bob", thing="thing-b1", ttl="10h")
    responses = await asyncio.gather(_renew(sqlite_api, old["serial"], "bob"),
                                     _renew(sqlite_api, old["serial"], "bob"))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201, 404], [response.text for response in responses]
    listed = await sqlite_api.client.get(f"/things/{thing}/serials",
                                         headers=sqlite_api.auth("bob"))
    winner = next(r for r in responses if r.status_code == 201).json()
    assert listed.json()["serials"] == [winner["serial"]]
