"""Hostile and out-of-range input against a real `certs serve` on PostgreSQL with two workers:
each gets its 4xx with the SPEC's message, never a 500, and the service stays healthy. The
inputs are the ones a fault-and-fuzz run found answered with 500 (issue 15)."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.identity import IdentityFixture
from tests.fixtures.postgres import PostgresCluster
from tests.fixtures.serve import Served, serve_env, start_serve, stop_serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, identity: IdentityFixture,
           postgres_server: PostgresCluster) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("hostile")
    database = postgres_server.create_database("hostile")
    env = serve_env(tmp_path, identity, workers=2,
                    extra={"MF_CERTS_DB_URL": postgres_server.url(database),
                           "MF_THINGS_GRPC_TIMEOUT": "5s", "MF_AUTH_GRPC_TIMEOUT": "5s"})
    service = start_serve(env, tmp_path)
    yield service
    stop_serve(service.process)


@pytest.fixture(scope="module")
def client(served: Served, identity: IdentityFixture) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30,
                      headers={"Authorization": f"Bearer {identity.alice.token}"}) as http:
        yield http


def _healthy(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("ttl", ["23999999976h", 2000000000, "9" * 400 + "h", -1, 0, "1e9h",
                                 2**70, 1.5, [1], {"h": 1}])
def test_lifetimes_out_of_range_are_invalid_ttl(client: httpx.Client,
                                                identity: IdentityFixture, ttl: object) -> None:
    response = client.post("/certs", json={"thing_id": identity.thing_a1.id, "key_type": "ec",
                                           "ttl": ttl})
    assert (response.status_code, response.json()) == (400, {"error": "invalid ttl"})
    _healthy(client)


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_json_nested_a_hundred_thousand_levels_is_malformed(client: httpx.Client,
                                                             opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    body = opening * 100_000 + ("1" if opening != "[" else "") + closing * 100_000
    response = client.post("/certs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 413), response.text
    if response.status_code == 400:
        assert response.json() == {"error": "malformed entity specification"}
    _healthy(client)


def test_deep_but_small_json_is_malformed(client: httpx.Client) -> None:
    body = "[" * 20_000 + "]" * 20_000  # 40 kB: under the body limit, deeper than msgspec goes
    response = client.post("/certs", content=body, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (
        400, {"error": "malformed entity specification"})


@pytest.mark.parametrize("query", [
    "serial=a%00b", "from=0001-01-01T00:00:00%2B23:59", "to=9999-12-31T23:59:59-23:59",
    "serial=N9%C3%92%7D4%00%C2%9F&from=", "serial=%FF%FE", "offset=9" + "9" * 400,
    "limit=1e3", "from=not-a-date",
])
def test_query_strings_out_of_range_are_invalid_query_parameters(
    client: httpx.Client, identity: IdentityFixture, query: str
) -> None:
    response = client.get(f"/things/{identity.thing_a1.id}/serials?{query}")
    assert (response.status_code, response.json()) == (400, {"error": "invalid query parameters"})
    _healthy(client)


def test_a_one_mebibyte_header_gets_431(client: httpx.Client) -> None:
    response = client.get("/health", headers={"X-Padding": "a" * (1 << 20)})
    assert response.status_code == 431
    assert response.json() == {"error": "request header fields too large"}
    _healthy(client)


def test_a_body_over_the_limit_gets_413(client: httpx.Client, identity: IdentityFixture) -> None:
    body = '{"thing_id": "' + identity.thing_a1.id + '", "pad": "' + "a" * 200_000 + '"}'
    response = client.post("/certs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"error"}
    _healthy(client)


_BODY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=40), st.lists(st.integers(), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(["thing_id", "key_type", "key_bits", "ttl", "csr",
                                             "other"]), _BODY_VALUES, max_size=5))
def test_generated_issue_bodies_never_get_a_5xx(client: httpx.Client, body: dict) -> None:
    response = client.post("/certs", json=body)
    assert response.status_code < 500, (body, response.text)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(params=st.dictionaries(st.sampled_from(["offset", "limit", "serial", "from", "to"]),
                              st.text(max_size=30), max_size=5))
def test_generated_list_queries_never_get_a_5xx(client: httpx.Client, identity: IdentityFixture,
                                                params: dict) -> None:
    response = client.get(f"/things/{identity.thing_a1.id}/serials", params=params)
    assert response.status_code < 500, (params, response.text)
    if response.status_code != 200:
        assert set(response.json()) == {"error"}


def test_served_workers_stay_up(served: Served, client: httpx.Client) -> None:
    _healthy(client)
    assert served.process.poll() is None
    assert "Traceback" not in Path(served.log).read_text(errors="replace")
