"""What every OCSP answer carries over HTTP, whichever code answers it (Litestar's route or the
front of ``server.http.ocsp_asgi``): the request id, no caching, the request metrics; and what
is not an OCSP request is refused as before."""

import re

import httpx

from tests.ocsp.conftest import OcspSetup

JUNK = b"not an OCSP request"


def _ocsp_count(service: OcspSetup) -> float:
    text = httpx.get(f"{service.base_url}/metrics", timeout=30).text
    found = re.search(r'^certs_api_request_count\{method="ocsp"\} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_request_id_no_store_and_metrics(service: OcspSetup) -> None:
    before = _ocsp_count(service)
    answers = [
        httpx.post(service.ocsp_url, content=JUNK, timeout=30,
                   headers={"Content-Type": "application/ocsp-request"}),
        httpx.get(f"{service.ocsp_url}/bm90IGFuIE9DU1AgcmVxdWVzdA==", timeout=30),
    ]
    ids = set()
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/ocsp-response"
        assert answer.headers["cache-control"] == "no-store"
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
        ids.add(answer.headers["x-request-id"])
    assert len(ids) == 2
    given = httpx.post(service.ocsp_url, content=JUNK, timeout=30,
                       headers={"X-Request-Id": "gateway-7.42"})
    assert given.headers["x-request-id"] == "gateway-7.42"
    assert _ocsp_count(service) == before + 3


def test_what_is_not_an_ocsp_request(service: OcspSetup) -> None:
    assert httpx.put(service.ocsp_url, content=JUNK, timeout=30).status_code == 405
    too_large = httpx.post(service.ocsp_url, content=b"0" * (65 * 1024), timeout=30)
    assert too_large.status_code == 413
    with_query = httpx.post(f"{service.ocsp_url}?x=%00", content=JUNK, timeout=30)
    assert with_query.status_code == 400
