"""GET /certs/{serial}/download: a device fetches its certificate and key once."""

import asyncio

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.http.conftest import ISSUE_FIELDS, spki


async def test_download_once(api):
    thing = api.identity.thing_a1
    issued = await api.issue(ttl="48h", key_bits=384)
    response = await api.download(issued["serial"], thing.key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == ISSUE_FIELDS  # the issue body, whose thing_id is the device's
    assert body["thing_id"] == thing.id
    for field in ISSUE_FIELDS - {"private_key"}:
        assert body[field] == issued[field], field
    api.check_issued(body, thing.id, "ec", 384)
    downloaded_key = load_pem_private_key(body["private_key"].encode(), None)
    issued_key = load_pem_private_key(issued["private_key"].encode(), None)
    assert spki(downloaded_key.public_key()) == spki(issued_key.public_key())
    assert downloaded_key.private_numbers() == issued_key.private_numbers()

    view = await api.view(issued["serial"])
    assert view.json()["downloaded"] is True
    listed = await api.client.get(f"/things/{thing.id}/serials", headers=api.auth("alice"))
    assert listed.json()["certs"][0]["downloaded"] is True

    again = await api.download(issued["serial"], thing.key)
    assert (again.status_code, again.json()) == (403, {"error": "certificate already downloaded"})
    external = await api.download(issued["serial"], thing.external_key, scheme="External")
    assert (external.status_code, external.json()) == \
        (403, {"error": "certificate already downloaded"})


async def test_concurrent_first_downloads_one_wins(api):
    thing = api.identity.thing_a1
    issued = await api.issue(ttl="1h")
    responses = await asyncio.gather(*(api.download(issued["serial"], thing.key)
                                       for _ in range(2)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 403], [response.text for response in responses]
    loser = next(response for response in responses if response.status_code == 403)
    assert loser.json() == {"error": "certificate already downloaded"}
    winner = next(response for response in responses if response.status_code == 200)
    assert winner.json()["private_key"].startswith("-----BEGIN EC PRIVATE KEY-----")


async def test_many_concurrent_first_downloads_one_wins(sqlite_api):
    thing = sqlite_api.identity.thing_a1
    issued = await sqlite_api.issue(ttl="1h")
    responses = await asyncio.gather(*(sqlite_api.download(issued["serial"], thing.key)
                                       for _ in range(8)))
    statuses = [response.status_code for response in responses]
    assert sorted(statuses) == [200] + [403] * 7, statuses


async def test_download_with_external_key(sqlite_api):
    thing = sqlite_api.identity.thing_a1
    issued = await sqlite_api.issue(ttl="1h")
    response = await sqlite_api.download(issued["serial"], thing.external_key, scheme="External")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thing_id"] == thing.id
    sqlite_api.check_issued(body, thing.id, "ec", 256)
    again = await sqlite_api.download(issued["serial"], thing.key)
    assert (again.status_code, again.json()) == (403, {"error": "certificate already downloaded"})


async def test_download_of_a_thing_without_certificate_download(sqlite_api):
    """A certificate of thing-a2 downloads with thing-a2's key; not with thing-a1's."""
    a1, a2 = sqlite_api.identity.thing_a1, sqlite_api.identity.thing_a2
    issued = await sqlite_api.issue(thing="thing-a2", ttl="1h")
    other = await sqlite_api.download(issued["serial"], a1.key)
    assert (other.status_code, other.json()) == \
        (403, {"error": "failed to perform authorization over the entity"})
    other_external = await sqlite_api.download(issued["serial"], a1.external_key,
                                               scheme="External")
    assert other_external.status_code == 403
    # the refused attempts did not use up the download
    view = await sqlite_api.view(issued["serial"])
    assert view.json()["downloaded"] is False
    own = await sqlite_api.download(issued["serial"], a2.key)
    assert own.status_code == 200, own.text
    assert own.json()["thing_id"] == a2.id
