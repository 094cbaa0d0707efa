"""Operations routes: /health, /metrics, /openapi.json (the CRL routes are in test_view_revoke)."""

import asyncio
import json
import logging
import re

from cryptography import x509

from server.http.app import create_app
from tests.http.conftest import serving

SPEC_ROUTES = {  # SPEC 3: every GET route but /download also answers HEAD
    "/certs": {"post"},
    "/certs/{serial}": {"get", "head", "put", "delete"},
    "/certs/{serial}/rotate": {"post"},
    "/certs/{serial}/download": {"get"},
    "/things/{thing_id}/serials": {"get", "head"},
    "/svccerts/things/{thing_id}/serials": {"get", "head"},
    "/things/{thing_id}/certs": {"get", "head"},
    "/crl": {"get", "head"},
    "/crl.pem": {"get", "head"},
    "/ca": {"get", "head"},
    "/ca.pem": {"get", "head"},
    "/ocsp": {"post"},
    "/ocsp/{encoded}": {"get", "head"},
    "/.well-known/est/cacerts": {"get", "head"},
    "/.well-known/est/simpleenroll": {"post"},
    "/.well-known/est/simplereenroll": {"post"},
    "/.well-known/est/csrattrs": {"get", "head"},
    "/health": {"get", "head"},
    "/metrics": {"get", "head"},
}


async def test_health(sqlite_api):
    response = await sqlite_api.client.get("/health")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/health+json"
    body = response.json()
    assert {"status", "version", "commit", "description", "build_time", "checks"} <= set(body)
    assert body["status"] == "pass"
    assert body["description"] == "certs service"
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["commit"], str) and isinstance(body["build_time"], str)
    checks = body["checks"]
    assert set(checks) >= {"hsm", "database", "things"}
    assert all(check["status"] == "pass" for check in checks.values()), checks


def _sample(text: str, name: str, method: str) -> float | None:
    pattern = re.compile(rf'^{re.escape(name)}\{{method="{method}"\}} (\S+)$', re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else None


async def test_metrics_content_type(sqlite_api):
    response = await sqlite_api.client.get("/metrics")
    assert response.status_code == 200
    content_type = response.headers["content-type"]
    assert content_type.split(";")[0].strip() == "text/plain"
    parameters = [part.split("=")[0].strip().lower() for part in content_type.split(";")[1:]]
    # a duplicated parameter makes the header invalid: Go's mime.ParseMediaType refuses it,
    # and Prometheus 3 fails a scrape whose Content-Type it cannot parse
    assert len(parameters) == len(set(parameters)), content_type


async def test_metrics_request_count(sqlite_api):
    first = await sqlite_api.client.get("/metrics")
    assert first.status_code == 200
    before = _sample(first.text, "certs_api_request_count", "issue_cert") or 0.0

    await sqlite_api.issue(ttl="1h")
    await sqlite_api.issue(ttl="1h")
    text = (await sqlite_api.client.get("/metrics")).text
    # the Go service's names: certs_api_request_count{method}, ..._latency_microseconds{method}
    assert _sample(text, "certs_api_request_count", "issue_cert") == before + 2, \
        [line for line in text.splitlines() if "certs_api_request_count" in line]
    assert _sample(text, "certs_api_request_latency_microseconds_count", "issue_cert")
    assert _sample(text, "certs_api_request_latency_microseconds_sum", "issue_cert")


async def test_openapi_document(sqlite_api):
    response = await sqlite_api.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = {path: {method for method in operations if method in
                    ("get", "put", "post", "delete", "patch", "head", "options")}
             for path, operations in document["paths"].items()}
    paths.pop("/openapi.json", None)  # the document itself may or may not describe itself
    assert paths == SPEC_ROUTES

    ui = await sqlite_api.client.get("/schema")
    assert ui.status_code == 200


async def test_one_log_line_per_request_without_secrets(sqlite_api, caplog):
    caplog.set_level(logging.INFO, logger="certs.http")
    body = await sqlite_api.issue(ttl="1h")
    key = sqlite_api.identity.things["thing-a1"].key
    download = await sqlite_api.client.get(f"/certs/{body['serial']}/download",
                                           headers={"Authorization": f"Thing {key}"})
    assert download.status_code == 200
    lines = [json.loads(record.getMessage()) for record in caplog.records
             if record.name == "certs.http"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/certs", 201), ("GET", f"/certs/{body['serial']}/download", 200)]
    assert all(line["ms"] >= 0 for line in lines)
    logged = caplog.text
    for secret in (sqlite_api.identity.users["alice"].token, key, "PRIVATE KEY",
                   body["private_key"].splitlines()[1]):
        assert secret not in logged


async def test_the_app_serves_while_its_first_crl_is_being_built(components, bearer, identity):
    """The first CRL is built in the background: issuing does not wait for it; the CRL routes
    do, without holding the service's threads meanwhile."""
    await asyncio.wait_for(_serve_while_the_first_crl_is_held(components, bearer, identity), 60)


async def _serve_while_the_first_crl_is_held(components, bearer, identity) -> None:
    publisher = components.service.crl
    ca = x509.load_pem_x509_certificate(components.authority.ca_pem.encode())
    app = create_app(components=components)
    issue_body = {"thing_id": str(identity.things["thing-a1"].id), "key_type": "ec"}
    publisher._lock.acquire()  # as if the first build were still reading revocations
    async with serving(app, lifespan=True) as client:
        try:
            # More CRL requests than the service has threads (4 in these tests)...
            crl_requests = [asyncio.create_task(client.get("/crl.pem")) for _ in range(8)]
            await asyncio.sleep(0.2)
            assert not any(request.done() for request in crl_requests)  # they wait
            # ...and issuing still gets a thread.
            issued = await client.post("/certs", headers=bearer("alice"), json=issue_body)
            assert issued.status_code == 201, issued.text
            assert publisher.current is None
        finally:
            publisher._lock.release()  # before the client's exit, which awaits the build
        for response in await asyncio.gather(*crl_requests):
            assert response.status_code == 200, response.text
            assert x509.load_pem_x509_crl(response.content).is_signature_valid(ca.public_key())
        await components.service.crl_ready()
        assert publisher.current is not None
