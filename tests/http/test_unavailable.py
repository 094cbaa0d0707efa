"""503 when the identity service is down or does not answer, and recovery afterwards."""

import asyncio
import time

import pytest

UNAVAILABLE = (503, {"error": "things service unavailable"})


@pytest.fixture
async def default_timeout_api(make_api, sqlite_url):
    """The app with the default 1 s identity deadline (MF_THINGS_GRPC_TIMEOUT)."""
    api = await make_api(sqlite_url, things_timeout="1s")
    assert api.components.things.timeout == 1.0
    return api


@pytest.fixture
async def blackhole_api(make_api, sqlite_url, identity_blackhole):
    """The app pointed at a things service that accepts connections and never answers."""
    return await make_api(sqlite_url, things_url=identity_blackhole, things_timeout="1s")


async def _timed(request):
    started = time.monotonic()
    response = await request()
    return response, time.monotonic() - started


def _serial_routes(api, serial):
    alice = api.auth("alice")
    body = {"thing_id": api.thing_id("thing-a1"), "key_type": "ec"}
    return {
        "view": lambda: api.client.get(f"/certs/{serial}", headers=alice),
        "renew": lambda: api.client.put(f"/certs/{serial}", headers=alice),
        "rotate": lambda: api.client.post(f"/certs/{serial}/rotate", json=body, headers=alice),
        "revoke": lambda: api.client.delete(f"/certs/{serial}", headers=alice),
    }


def _thing_routes(api, serial):
    alice = api.auth("alice")
    thing = api.thing_id("thing-a1")
    device = {"Authorization": f"Thing {api.identity.thing_a1.key}"}
    return {
        "issue": lambda: api.client.post("/certs", json={"thing_id": thing, "key_type": "ec"},
                                         headers=alice),
        "serials": lambda: api.client.get(f"/things/{thing}/serials", headers=alice),
        "svccerts": lambda: api.client.get(f"/svccerts/things/{thing}/serials", headers=alice),
        "certs": lambda: api.client.get(f"/things/{thing}/certs", headers=alice),
        "download": lambda: api.client.get(f"/certs/{serial}/download", headers=device),
    }


async def test_identity_down_is_503(default_timeout_api, identity_down):
    api = default_timeout_api
    for name, request in _thing_routes(api, "abcdef").items():
        response, elapsed = await _timed(request)
        assert (response.status_code, response.json()) == UNAVAILABLE, name
        assert elapsed < 3.0, (name, elapsed)


async def test_identity_going_down_and_coming_back(default_timeout_api, identity):
    api = default_timeout_api
    issued = await api.issue(ttl="100h")
    with identity.stopped():
        for routes in (_serial_routes(api, issued["serial"]),
                       _thing_routes(api, issued["serial"])):
            for name, request in routes.items():
                response, elapsed = await _timed(request)
                assert (response.status_code, response.json()) == UNAVAILABLE, name
                assert elapsed < 3.0, (name, elapsed)
    # nothing changed while the identity service was down
    crl_serials = await api.crl_serials()
    assert issued["serial"] not in crl_serials

    # the service recovers by itself once the identity service is back
    deadline = time.monotonic() + 10
    while True:
        view = await api.view(issued["serial"])
        if view.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert view.status_code == 200, view.text
    assert view.json()["downloaded"] is False
    revoke = await api.client.delete(f"/certs/{issued['serial']}", headers=api.auth("alice"))
    assert revoke.status_code == 200, revoke.text


async def test_identity_not_answering_is_503(blackhole_api):
    api = blackhole_api
    routes = _thing_routes(api, "abcdef")
    for name in ("issue", "download"):  # the one deadline applies to every identity call
        response, elapsed = await _timed(routes[name])
        assert (response.status_code, response.json()) == UNAVAILABLE, name
        assert 0.9 <= elapsed < 3.0, (name, elapsed)  # the 1 s deadline, plus little


async def test_database_gone_is_503(make_api, postgres_server):
    """The database disappears under a running service: 503, never 500."""
    name = postgres_server.create_database("gone")
    try:
        api = await make_api(postgres_server.url(name))
        issued = await api.issue(ttl="1h")
    finally:
        postgres_server.drop_database(name)
    health = await api.client.get("/health")
    assert health.status_code == 503, health.text
    assert health.headers["content-type"].split(";")[0] == "application/health+json"
    assert health.json()["status"] == "fail"
    assert health.json()["checks"]["database"]["status"] == "fail"
    assert health.json()["checks"]["hsm"]["status"] == "pass"
    alice = api.auth("alice")
    thing = api.thing_id("thing-a1")
    responses = [
        await api.client.post("/certs", json={"thing_id": thing, "key_type": "ec"},
                              headers=alice),
        await api.view(issued["serial"]),
        await api.client.get(f"/things/{thing}/serials", headers=alice),
        await api.client.delete(f"/certs/{issued['serial']}", headers=alice),
        await api.download(issued["serial"], api.identity.thing_a1.key),
    ]
    # issued together, they fail together
    responses += await asyncio.gather(*(
        api.client.post("/certs", json={"thing_id": thing, "key_type": "ec"}, headers=alice)
        for _ in range(6)))
    for response in responses:
        assert (response.status_code, response.json()) == \
            (503, {"error": "database unavailable"}), response.request.url


async def test_health_fails_while_the_things_service_is_down(default_timeout_api,
                                                             identity_down):
    """SPEC 11: /health is 503 when a dependency the next request needs is unusable; the
    things service authorizes every user request (it answered 200 + warn before)."""
    response = await default_timeout_api.client.get("/health")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["things"]["status"] == "fail"
    assert body["checks"]["hsm"]["status"] == "pass"
