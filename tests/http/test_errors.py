"""Every row of the SPEC's error table: exact status and {"error": message} (one backend)."""

import json

import httpx
import pytest

from tests.fixtures.hsm import PIN, SO_PIN

MALFORMED = (400, {"error": "malformed entity specification"})
MISSING_THING = (400, {"error": "missing thing id"})
BAD_KEY_TYPE = (400, {"error": "unsupported key type"})
BAD_KEY_BITS = (400, {"error": "invalid key bits"})
BAD_TTL = (400, {"error": "invalid ttl"})
BAD_QUERY = (400, {"error": "invalid query parameters"})
BAD_LIMIT = (400, {"error": "invalid limit size"})
NO_TOKEN = (401, {"error": "missing or invalid bearer user token"})
NO_THING_KEY = (401, {"error": "invalid thing key type"})
AUTHN = (401, {"error": "failed to perform authentication over the entity"})
AUTHZ = (403, {"error": "failed to perform authorization over the entity"})
NOT_FOUND = (404, {"error": "entity not found"})
REVOKE_NOT_FOUND = (404, {"error": "failed to revoke certificate"})
UNSUPPORTED = (415, {"error": "unsupported content type"})
UNKNOWN_SERIAL = "7fffffffffffffffffffffffffffffffffffffff"
LIST_ROUTES = ["/things/{id}/serials", "/svccerts/things/{id}/serials", "/things/{id}/certs"]


def _result(response):
    return response.status_code, response.json()


@pytest.fixture
async def serial(sqlite_api):
    """A certificate of thing-a1 that a rotate can target."""
    return (await sqlite_api.issue(ttl="10h"))["serial"]


async def _post(api, path, content, content_type="application/json", user="alice"):
    headers = {**api.auth(user)}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return await api.client.post(path, content=content, headers=headers)


# ---- 400: the body ---------------------------------------------------------------------------

NOT_OBJECTS = ["not json", "{", '{"thing_id": }', "", "[]", '["thing_id"]', '"thing"', "42",
               "null", "true"]


@pytest.mark.parametrize("content", NOT_OBJECTS)
async def test_issue_body_not_a_json_object(sqlite_api, content):
    assert _result(await _post(sqlite_api, "/certs", content)) == MALFORMED


@pytest.mark.parametrize("content", ["not json", "[]", '[{"thing_id": "x"}]'])
async def test_rotate_body_not_a_json_object(sqlite_api, serial, content):
    assert _result(await _post(sqlite_api, f"/certs/{serial}/rotate", content)) == MALFORMED


def _issue_cases(thing_id):
    return [
        ({}, MISSING_THING),
        ({"key_type": "ec"}, MISSING_THING),
        ({"thing_id": "", "key_type": "ec"}, MISSING_THING),
        ({"thing_id": None, "key_type": "ec"}, MISSING_THING),
        ({"thing_id": thing_id, "key_type": "dsa"}, BAD_KEY_TYPE),
        ({"thing_id": thing_id, "key_type": "ed25519"}, BAD_KEY_TYPE),
        ({"thing_id": thing_id, "key_type": "rsa-pss"}, BAD_KEY_TYPE),
        ({"thing_id": thing_id, "key_type": 7}, BAD_KEY_TYPE),
        ({"thing_id": thing_id, "key_type": "rsa", "key_bits": 1024}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "rsa", "key_bits": 256}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "rsa", "key_bits": 2047}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "ec", "key_bits": 2048}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "ec", "key_bits": 512}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "ec", "key_bits": -256}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "ec", "key_bits": 256.5}, BAD_KEY_BITS),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "abc"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "1y"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "h"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "-1h"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "-5"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "0"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "0s"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "0h0m"}, BAD_TTL),
        # past the CA certificate's own notAfter (the test CA is valid for ten years)
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "200000h"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "87700h"}, BAD_TTL),
        ({"thing_id": thing_id, "key_type": "ec", "ttl": "99999999999999999999h"}, BAD_TTL),
    ]


@pytest.mark.parametrize("case", range(len(_issue_cases("x"))))
async def test_issue_body_errors(sqlite_api, case):
    body, expected = _issue_cases(sqlite_api.thing_id("thing-a1"))[case]
    assert _result(await _post(sqlite_api, "/certs", json.dumps(body))) == expected


@pytest.mark.parametrize("case", [0, 2, 4, 9, 12, 15, 19, 23])
async def test_rotate_body_errors(sqlite_api, serial, case):
    body, expected = _issue_cases(sqlite_api.thing_id("thing-a1"))[case]
    response = await _post(sqlite_api, f"/certs/{serial}/rotate", json.dumps(body))
    assert _result(response) == expected
    assert (await sqlite_api.view(serial)).status_code == 200


async def test_refused_requests_issue_nothing(sqlite_api, serial):
    thing = sqlite_api.thing_id("thing-a1")
    path = f"/things/{thing}/serials?limit=200"
    before = (await sqlite_api.client.get(path, headers=sqlite_api.auth("alice"))).json()
    for body, _ in _issue_cases(thing):
        response = await _post(sqlite_api, "/certs", json.dumps(body))
        assert response.status_code == 400
        response = await _post(sqlite_api, f"/certs/{serial}/rotate", json.dumps(body))
        assert response.status_code == 400
    after = (await sqlite_api.client.get(path, headers=sqlite_api.auth("alice"))).json()
    assert after == before
    assert serial in after["serials"]


async def test_ttl_up_to_the_ca_expiry_is_accepted(sqlite_api):
    """The bound is the CA's notAfter: 87000h (under ten years) still fits."""
    body = await sqlite_api.issue(ttl="87000h")
    assert body["serial"]


# ---- 400: the query --------------------------------------------------------------------------

BAD_QUERIES = [
    ("limit=abc", BAD_QUERY), ("limit=-1", BAD_QUERY), ("limit=1.5", BAD_QUERY),
    ("offset=x", BAD_QUERY), ("offset=-1", BAD_QUERY),
    ("from=yesterday", BAD_QUERY), ("to=2024-13-45T00:00:00Z", BAD_QUERY),
    ("from=1700000000", BAD_QUERY),
    # whole numbers the database cannot take (beyond a signed 64-bit OFFSET)
    ("offset=9223372036854775808", BAD_QUERY), ("offset=99999999999999999999", BAD_QUERY),
    ("limit=201", BAD_LIMIT), ("limit=1000", BAD_LIMIT), ("offset=0&limit=100000", BAD_LIMIT),
]


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize(("query", "expected"), BAD_QUERIES)
async def test_list_query_errors(sqlite_api, route, query, expected):
    path = route.format(id=sqlite_api.thing_id("thing-a1"))
    response = await sqlite_api.client.get(f"{path}?{query}", headers=sqlite_api.auth("alice"))
    assert _result(response) == expected


# ---- 401 ---------------------------------------------------------------------------------------

GARBLED = [None, "", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc",
           "tok-alice-5f1d8c2e9b7a4e36a0d1", "Thing key-a1-9d3f6b1c7e2a"]


def _user_routes(thing_id, serial):
    body = json.dumps({"thing_id": thing_id, "key_type": "ec"})
    return [
        ("POST", "/certs", body),
        ("GET", f"/certs/{serial}", None),
        ("PUT", f"/certs/{serial}", None),
        ("POST", f"/certs/{serial}/rotate", body),
        ("DELETE", f"/certs/{serial}", None),
        ("GET", f"/things/{thing_id}/serials", None),
        ("GET", f"/svccerts/things/{thing_id}/serials", None),
        ("GET", f"/things/{thing_id}/certs", None),
    ]


async def _call(api, method, path, content, headers):
    if content is not None:
        headers = {**headers, "Content-Type": "application/json"}
    return await api.client.request(method, path, content=content, headers=headers)


@pytest.mark.parametrize("header", GARBLED)
async def test_user_routes_without_a_bearer_token(sqlite_api, serial, header):
    headers = {} if header is None else {"Authorization": header}
    for method, path, content in _user_routes(sqlite_api.thing_id("thing-a1"), serial):
        response = await _call(sqlite_api, method, path, content, headers)
        assert _result(response) == NO_TOKEN, f"{method} {path}"
    assert (await sqlite_api.view(serial)).status_code == 200


async def test_user_routes_with_a_rejected_token(sqlite_api, serial):
    headers = sqlite_api.auth("rejected")
    for method, path, content in _user_routes(sqlite_api.thing_id("thing-a1"), serial):
        response = await _call(sqlite_api, method, path, content, headers)
        assert _result(response) == AUTHN, f"{method} {path}"
    assert (await sqlite_api.view(serial)).status_code == 200


@pytest.mark.parametrize("header", [None, "", "Thing", "Thing ", "External",
                                    "Bearer tok-alice-5f1d8c2e9b7a4e36a0d1",
                                    "Basic a2V5LWExLTlkM2Y2YjFjN2UyYQ==", "key-a1-9d3f6b1c7e2a",
                                    "thing key-a1-9d3f6b1c7e2a"])
async def test_download_without_a_thing_key(sqlite_api, serial, header):
    headers = {} if header is None else {"Authorization": header}
    response = await sqlite_api.client.get(f"/certs/{serial}/download", headers=headers)
    assert _result(response) == NO_THING_KEY
    assert (await sqlite_api.view(serial)).json()["downloaded"] is False


@pytest.mark.parametrize(("scheme", "key"), [
    ("Thing", "key-nobody-0000"),
    ("External", "key-nobody-0000"),
    ("External", "key-a1-9d3f6b1c7e2a"),  # an internal key presented as external
    ("Thing", "ext-a1-4c8e2d7f"),  # an external key presented as internal
])
async def test_download_with_an_unknown_key(sqlite_api, serial, scheme, key):
    response = await sqlite_api.download(serial, key, scheme=scheme)
    assert _result(response) == AUTHN
    assert (await sqlite_api.view(serial)).json()["downloaded"] is False


# ---- 403 -------------------------------------------------------------------------------------


async def test_download_with_another_things_key(sqlite_api, serial):
    for thing in ("thing-a2", "thing-b1"):
        response = await sqlite_api.download(serial, sqlite_api.identity.things[thing].key)
        assert _result(response) == AUTHZ
    assert (await sqlite_api.view(serial)).json()["downloaded"] is False


async def test_unknown_thing_is_forbidden(sqlite_api):
    unknown = sqlite_api.identity.unknown_thing_id
    response = await _post(sqlite_api, "/certs",
                           json.dumps({"thing_id": unknown, "key_type": "ec"}))
    assert _result(response) == AUTHZ
    response = await sqlite_api.client.get(f"/things/{unknown}/serials",
                                           headers=sqlite_api.auth("alice"))
    assert _result(response) == AUTHZ


# ---- 404 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("unknown", [UNKNOWN_SERIAL, "1", "not-a-serial", "ABCDEF",
                                     "12345678901234567890"])
async def test_unknown_serial(sqlite_api, unknown):
    alice = sqlite_api.auth("alice")
    thing = sqlite_api.thing_id("thing-a1")
    assert _result(await sqlite_api.view(unknown)) == NOT_FOUND
    assert _result(await sqlite_api.client.put(f"/certs/{unknown}", headers=alice)) == NOT_FOUND
    rotate = await _post(sqlite_api, f"/certs/{unknown}/rotate",
                         json.dumps({"thing_id": thing, "key_type": "ec"}))
    assert _result(rotate) == NOT_FOUND
    revoke = await sqlite_api.client.delete(f"/certs/{unknown}", headers=alice)
    assert _result(revoke) == REVOKE_NOT_FOUND
    download = await sqlite_api.download(unknown, sqlite_api.identity.thing_a1.key)
    assert _result(download) == NOT_FOUND


# ---- 415 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml",
                                          "application/x-www-form-urlencoded",
                                          "text/plain; charset=utf-8", "application/jsonx"])
async def test_unsupported_content_type(sqlite_api, serial, content_type):
    body = json.dumps({"thing_id": sqlite_api.thing_id("thing-a1"), "key_type": "ec"})
    issue = await _post(sqlite_api, "/certs", body, content_type=content_type)
    assert _result(issue) == UNSUPPORTED
    rotate = await _post(sqlite_api, f"/certs/{serial}/rotate", body, content_type=content_type)
    assert _result(rotate) == UNSUPPORTED
    assert (await sqlite_api.view(serial)).status_code == 200


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/json;charset=UTF-8", "Application/JSON"])
async def test_json_content_type_with_parameters(sqlite_api, serial, content_type):
    body = json.dumps({"thing_id": sqlite_api.thing_id("thing-a1"), "key_type": "ec",
                       "ttl": "1h"})
    issue = await _post(sqlite_api, "/certs", body, content_type=content_type)
    assert issue.status_code == 201, issue.text
    rotate = await _post(sqlite_api, f"/certs/{serial}/rotate", body, content_type=content_type)
    assert rotate.status_code == 201, rotate.text


# ---- no leaks --------------------------------------------------------------------------------


async def test_responses_are_checked_for_leaks(sqlite_api, serial):
    """Every response of these tests passes the leak guard of conftest; prove it is active."""
    hooks = sqlite_api.client.event_hooks["response"]
    assert hooks
    leaking = httpx.Response(
        400, json={"error": "-----BEGIN EC PRIVATE KEY-----"},
        request=httpx.Request("GET", f"http://testserver.local/certs/{serial}"))
    with pytest.raises(AssertionError):
        await hooks[0](leaking)
    pin = httpx.Response(503, json={"error": f"pin {PIN} rejected"},
                         request=httpx.Request("POST", "http://testserver.local/certs"))
    with pytest.raises(AssertionError):
        await hooks[0](pin)


async def test_error_bodies_hold_no_secrets(sqlite_api, serial):
    thing = sqlite_api.identity.thing_a1
    young = (await sqlite_api.issue(ttl="2000h"))["serial"]
    responses = [
        await sqlite_api.view(serial, user="rejected"),
        await sqlite_api.download(serial, "key-nobody-0000"),
        await sqlite_api.download(serial, sqlite_api.identity.thing_a2.key),
        await _post(sqlite_api, "/certs", "{not json"),
        await _post(sqlite_api, "/certs", json.dumps({"thing_id": thing.id, "ttl": "x"})),
        await sqlite_api.client.put(f"/certs/{young}", headers=sqlite_api.auth("alice")),
    ]
    for response in responses:
        assert response.status_code >= 400
        text = response.text
        for secret in ("Traceback", PIN, SO_PIN, "PRIVATE KEY", thing.key,
                       sqlite_api.identity.unknown_token, sqlite_api.identity.alice.token):
            assert secret not in text
