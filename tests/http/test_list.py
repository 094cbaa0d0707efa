"""Listing a thing's certificates: /things/{id}/serials, /svccerts/..., /things/{id}/certs."""

import asyncio
from datetime import datetime, timedelta

import pytest

from tests.http.conftest import RFC3339_Z, VIEW_FIELDS, parse_time

ITEM_FIELDS = {"thing_id", "cert_serial", "expires_at", "downloaded"}
TTLS = ["5h", "1h", "3h", "2h", "4h", "3h", "3h"]


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def a1_certs(api):
    """Seven certificates of thing-a1 (three with the same ttl) and one of thing-a2, issued
    concurrently, ordered as the list must be: by expires_at, then serial."""
    bodies = await asyncio.gather(*(api.issue(ttl=ttl) for ttl in TTLS),
                                  api.issue(thing="thing-a2", ttl="1h"))
    own = [body for body in bodies if body["thing_id"] == api.thing_id("thing-a1")]
    return sorted(own, key=lambda body: (parse_time(body["expires_at"]), body["serial"]))


async def _list(api, query: str = "", thing: str = "thing-a1", route: str = "serials",
                prefix: str = ""):
    response = await api.client.get(f"{prefix}/things/{api.thing_id(thing)}/{route}{query}",
                                    headers=api.auth("alice"))
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("prefix", ["", "/svccerts"])
async def test_serials_body_and_order(api, a1_certs, prefix):
    body = await _list(api, prefix=prefix)
    assert set(body) == {"total", "offset", "limit", "certs", "serials"}
    assert (body["total"], body["offset"], body["limit"]) == (7, 0, 10)
    assert body["serials"] == [cert["serial"] for cert in a1_certs]
    assert [item["cert_serial"] for item in body["certs"]] == body["serials"]
    for item, issued in zip(body["certs"], a1_certs, strict=True):
        assert set(item) == ITEM_FIELDS
        assert item["thing_id"] == api.thing_id("thing-a1")
        assert item["expires_at"] == issued["expires_at"]
        assert RFC3339_Z.match(item["expires_at"])
        assert item["downloaded"] is False

    other = await _list(api, thing="thing-a2", prefix=prefix)
    assert other["total"] == 1 and len(other["serials"]) == 1
    assert other["certs"][0]["thing_id"] == api.thing_id("thing-a2")


async def test_serials_paging(api, a1_certs):
    serials = [cert["serial"] for cert in a1_certs]
    page = await _list(api, "?offset=2&limit=3")
    assert (page["total"], page["offset"], page["limit"]) == (7, 2, 3)
    assert page["serials"] == serials[2:5]
    last = await _list(api, "?offset=5&limit=3")
    assert (last["total"], last["serials"]) == (7, serials[5:])
    beyond = await _list(api, "?offset=20&limit=3")
    assert (beyond["total"], beyond["serials"], beyond["certs"]) == (7, [], [])
    one = await _list(api, "?limit=1")
    assert (one["total"], one["limit"], one["serials"]) == (7, 1, serials[:1])
    most = await _list(api, "?limit=200")
    assert (most["limit"], most["serials"]) == (200, serials)
    walked = []
    for offset in range(0, 7, 2):
        walked += (await _list(api, f"?offset={offset}&limit=2"))["serials"]
    assert walked == serials


async def test_serials_filters(api, a1_certs):
    target = a1_certs[3]["serial"]
    fragment = target[8:20]
    matching = [cert["serial"] for cert in a1_certs if fragment in cert["serial"]]
    by_serial = await _list(api, f"?serial={fragment}")
    assert target in by_serial["serials"]
    assert by_serial["serials"] == matching and by_serial["total"] == len(matching)

    expiries = sorted({parse_time(cert["expires_at"]) for cert in a1_certs})
    # bounds half-way between expiry times, so inclusive and exclusive bounds agree
    low = min(t for t in expiries if t > expiries[0]) - timedelta(minutes=30)
    high = expiries[-1] - timedelta(minutes=30)
    in_range = [cert["serial"] for cert in a1_certs
                if low <= parse_time(cert["expires_at"]) <= high]
    assert 0 < len(in_range) < len(a1_certs) - 1

    after_low = await api.client.get(
        f"/things/{api.thing_id('thing-a1')}/serials",
        params={"from": _at(low)}, headers=api.auth("alice"))
    assert after_low.status_code == 200, after_low.text
    assert after_low.json()["serials"] == [cert["serial"] for cert in a1_certs
                                           if parse_time(cert["expires_at"]) >= low]
    before_high = await api.client.get(
        f"/things/{api.thing_id('thing-a1')}/serials",
        params={"to": _at(high)}, headers=api.auth("alice"))
    assert before_high.json()["serials"] == [cert["serial"] for cert in a1_certs
                                             if parse_time(cert["expires_at"]) <= high]
    between = await api.client.get(
        f"/things/{api.thing_id('thing-a1')}/serials",
        params={"from": _at(low), "to": high.isoformat()},  # both RFC 3339 forms
        headers=api.auth("alice"))
    assert between.status_code == 200, between.text
    assert between.json()["serials"] == in_range
    assert between.json()["total"] == len(in_range)


async def test_revoked_certificates_are_not_listed(api, a1_certs):
    gone = a1_certs[2]["serial"]
    response = await api.client.delete(f"/certs/{gone}", headers=api.auth("alice"))
    assert response.status_code == 200, response.text
    body = await _list(api)
    assert body["total"] == 6
    assert body["serials"] == [cert["serial"] for cert in a1_certs if cert["serial"] != gone]
    certs = await _list(api, route="certs")
    assert gone not in [view["serial"] for view in certs["certs"]]
    assert certs["total"] == 6


async def test_certs_lists_view_bodies(api, a1_certs):
    body = await _list(api, route="certs")
    assert set(body) == {"total", "offset", "limit", "certs"}
    assert (body["total"], body["offset"], body["limit"]) == (7, 0, 10)
    assert [view["serial"] for view in body["certs"]] == [cert["serial"] for cert in a1_certs]
    for view, issued in zip(body["certs"], a1_certs, strict=True):
        assert set(view) == VIEW_FIELDS, sorted(view)
        for field in ("serial", "thing_id", "certificate", "issuing_ca", "ca_chain",
                      "private_key_type", "key_bits", "expires_at"):
            assert view[field] == issued[field], field
        assert view["key_type"] == "ec"
        assert view["downloaded"] is False

    page = await _list(api, "?offset=1&limit=2", route="certs")
    assert (page["total"], page["offset"], page["limit"]) == (7, 1, 2)
    assert [view["serial"] for view in page["certs"]] == [c["serial"] for c in a1_certs[1:3]]


async def test_empty_list(sqlite_api):
    response = await sqlite_api.client.get(
        f"/things/{sqlite_api.thing_id('thing-b1')}/serials", headers=sqlite_api.auth("bob"))
    assert response.status_code == 200, response.text
    assert response.json() == {"total": 0, "offset": 0, "limit": 10, "certs": [], "serials": []}
