"""The authorisation matrix: every user route for every kind of caller (one backend)."""

import pytest

from tests.http.conftest import ISSUE_FIELDS, VIEW_FIELDS

NO_TOKEN = (401, {"error": "missing or invalid bearer user token"})
AUTHN = (401, {"error": "failed to perform authentication over the entity"})
AUTHZ = (403, {"error": "failed to perform authorization over the entity"})

ROUTES = ["issue", "view", "renew", "rotate", "revoke", "serials", "svccerts_serials", "certs"]
READS = {"view", "serials", "svccerts_serials", "certs"}
SUCCESS = {"issue": 201, "view": 200, "renew": 201, "rotate": 201, "revoke": 200,
           "serials": 200, "svccerts_serials": 200, "certs": 200}

# (caller, thing whose certificate is acted on, result of reads, result of changes);
# "ok" is the route's success.
CALLERS = [
    pytest.param(None, "thing-a1", NO_TOKEN, NO_TOKEN, id="no-token"),
    pytest.param("rejected", "thing-a1", AUTHN, AUTHN, id="rejected-token"),
    pytest.param("mallory", "thing-a1", AUTHZ, AUTHZ, id="mallory-no-access"),
    pytest.param("alice", "thing-b1", AUTHZ, AUTHZ, id="alice-on-bobs-thing"),
    pytest.param("bob", "thing-a1", "ok", AUTHZ, id="bob-viewer"),
    pytest.param("carol", "thing-a1", "ok", "ok", id="carol-editor"),
    pytest.param("alice", "thing-a1", "ok", "ok", id="alice-owner"),
    pytest.param("bob", "thing-b1", "ok", "ok", id="bob-owner"),
]
OWNERS = {"thing-a1": "alice", "thing-a2": "alice", "thing-b1": "bob"}


async def _request(api, route, user, thing, serial):
    thing_id = api.thing_id(thing)
    headers = api.auth(user)
    body = {"thing_id": thing_id, "key_type": "ec", "ttl": "10h"}
    if route == "issue":
        return await api.client.post("/certs", json=body, headers=headers)
    if route == "view":
        return await api.client.get(f"/certs/{serial}", headers=headers)
    if route == "renew":
        return await api.client.put(f"/certs/{serial}", headers=headers)
    if route == "rotate":
        return await api.client.post(f"/certs/{serial}/rotate", json=body, headers=headers)
    if route == "revoke":
        return await api.client.delete(f"/certs/{serial}", headers=headers)
    # the module's tests share a database: filter the lists on the serial of this test
    query = {"serial": serial}
    if route == "serials":
        return await api.client.get(f"/things/{thing_id}/serials", params=query,
                                    headers=headers)
    if route == "svccerts_serials":
        return await api.client.get(f"/svccerts/things/{thing_id}/serials", params=query,
                                    headers=headers)
    return await api.client.get(f"/things/{thing_id}/certs", params=query, headers=headers)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("user", "thing", "reads", "changes"), CALLERS)
async def test_authorisation(sqlite_api, route, user, thing, reads, changes):
    owner = OWNERS[thing]
    # inside the renewal window, so that renew succeeds for an editor
    existing = await sqlite_api.issue(user=owner, thing=thing, ttl="100h")
    serial = existing["serial"]
    expected = reads if route in READS else changes

    response = await _request(sqlite_api, route, user, thing, serial)

    if expected != "ok":
        assert (response.status_code, response.json()) == expected
        # a refused request changed nothing
        view = await sqlite_api.view(serial, user=owner)
        assert view.status_code == 200, view.text
        assert view.json()["certificate"] == existing["certificate"]
        assert serial not in await sqlite_api.crl_serials()
        return

    assert response.status_code == SUCCESS[route], response.text
    body = response.json()
    thing_id = sqlite_api.thing_id(thing)
    if route in ("issue", "renew", "rotate"):
        assert set(body) == ISSUE_FIELDS
        sqlite_api.check_issued(body, thing_id, "ec", 256)
        assert body["serial"] != serial
    if route in ("renew", "rotate", "revoke"):
        assert (await sqlite_api.view(serial, user=owner)).status_code == 404
        assert serial in await sqlite_api.crl_serials()
    if route == "revoke":
        assert set(body) == {"revocation_time", "RevocationTime"}
    if route == "view":
        assert set(body) == VIEW_FIELDS and body["serial"] == serial
    if route in ("serials", "svccerts_serials"):
        assert body["serials"] == [serial] and body["total"] == 1
        assert body["certs"][0]["thing_id"] == thing_id
    if route == "certs":
        assert [view["serial"] for view in body["certs"]] == [serial]
        assert set(body["certs"][0]) == VIEW_FIELDS
