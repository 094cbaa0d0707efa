"""The OpenAPI document of a real ``certs serve``: valid OpenAPI 3.1, every route with a readable
operationId, the security each route needs, the `{"error"}` body per status, the issue body and
the integer list parameters; and the wire details it describes (CA chain, CRL validators,
no-store on private keys)."""

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.api.st_hooks import documented_error_message

OPERATIONS = {
    ("post", "/certs"): "issueCert",
    ("get", "/certs/{serial}"): "viewCert",
    ("put", "/certs/{serial}"): "renewCert",
    ("post", "/certs/{serial}/rotate"): "rotateCert",
    ("delete", "/certs/{serial}"): "revokeCert",
    ("get", "/certs/{serial}/download"): "downloadCert",
    ("get", "/things/{thing_id}/serials"): "listSerials",
    ("get", "/svccerts/things/{thing_id}/serials"): "listSerialsSvc",
    ("get", "/things/{thing_id}/certs"): "listCerts",
    ("get", "/crl"): "getCrl",
    ("get", "/crl.pem"): "getCrlPem",
    ("get", "/ca"): "getCa",
    ("get", "/ca.pem"): "getCaPem",
    ("get", "/health"): "health",
    ("get", "/metrics"): "metrics",
}
USER_ROUTES = [key for key, name in OPERATIONS.items()
               if key[1].startswith(("/certs", "/things", "/svccerts")) and name != "downloadCert"]


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any], base_url: str) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert httpx.get(f"{base_url}/schema/openapi.json").json() == document
    assert "PRIVATE KEY" not in str(document)  # no key, not even as an example


def test_every_route_has_its_readable_operation_id(document: dict[str, Any]) -> None:
    found = {(method, path): operation["operationId"]
             for path, item in document["paths"].items() for method, operation in item.items()
             if method != "head"}
    for key, name in OPERATIONS.items():
        assert found.get(key) == name, key
    heads = {operation["operationId"] for item in document["paths"].values()
             for method, operation in item.items() if method == "head"}
    assert {"getCaHead", "getCaPemHead", "getCrlHead", "getCrlPemHead"} <= heads


def test_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["Bearer"] == {**schemes["Bearer"], "type": "http", "scheme": "bearer"}
    for name in ("ThingKey", "ExternalKey"):
        assert (schemes[name]["type"], schemes[name]["in"], schemes[name]["name"]) == (
            "apiKey", "header", "Authorization")
    for method, path in USER_ROUTES:
        assert _operation(document, method, path)["security"] == [{"Bearer": []}]
    assert _operation(document, "get", "/certs/{serial}/download")["security"] == [
        {"ThingKey": []}, {"ExternalKey": []}]
    for path in ("/crl", "/ca", "/health"):
        assert "security" not in _operation(document, "get", path)


def _messages(response: dict[str, Any]) -> set[str]:
    examples = response["content"]["application/json"]["examples"].values()
    return {example["value"]["error"] for example in examples}


def test_error_bodies_and_messages_per_status(document: dict[str, Any]) -> None:
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    issue = _operation(document, "post", "/certs")["responses"]
    assert set(issue) == {"201", "400", "401", "403", "413", "415", "503"}
    for response in issue.values():
        if "error" in str(response.get("content", {})):
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"missing thing id", "invalid ttl", "malformed entity specification"} <= _messages(
        issue["400"])
    assert _messages(issue["415"]) == {"unsupported content type"}
    assert _messages(issue["401"]) == {"missing or invalid bearer user token",
                                       "failed to perform authentication over the entity"}
    revoke = _operation(document, "delete", "/certs/{serial}")["responses"]
    assert _messages(revoke["404"]) == {"failed to revoke certificate"}
    download = _operation(document, "get", "/certs/{serial}/download")["responses"]
    assert "certificate already downloaded" in _messages(download["403"])
    assert "invalid thing key type" in _messages(download["401"])
    lists = _operation(document, "get", "/things/{thing_id}/serials")["responses"]
    assert {"invalid query parameters", "invalid limit size"} <= _messages(lists["400"])
    # Litestar's own validation body is never documented: the service does not send it.
    assert "status_code" not in str(document)


def test_issue_body_schema(document: dict[str, Any]) -> None:
    for method, path in (("post", "/certs"), ("post", "/certs/{serial}/rotate")):
        body = _operation(document, method, path)["requestBody"]
        assert body["required"] is True
        schema = body["content"]["application/json"]["schema"]
        assert schema["required"] == ["thing_id"]
        fields = schema["properties"]
        assert set(fields) == {"thing_id", "key_type", "key_bits", "ttl", "csr"}
        assert fields["key_type"]["enum"] == ["rsa", "ec", "ecdsa"]
        assert fields["key_type"]["default"] == "rsa"
        assert {2048, 3072, 4096, 256, 384, 521} <= set(fields["key_bits"]["enum"])
        assert [choice["type"] for choice in fields["ttl"]["oneOf"]] == ["string", "integer"]


def test_list_parameters_are_bounded_integers(document: dict[str, Any]) -> None:
    for path in ("/things/{thing_id}/serials", "/things/{thing_id}/certs"):
        parameters = {p["name"]: p["schema"]
                      for p in _operation(document, "get", path)["parameters"]}
        assert parameters["offset"] == {**parameters["offset"], "type": "integer", "minimum": 0,
                                        "default": 0}
        assert parameters["limit"] == {**parameters["limit"], "type": "integer", "minimum": 1,
                                       "maximum": 200, "default": 10}
        assert {"format": "date-time"} in parameters["from"]["anyOf"]


def test_non_integer_offset_keeps_the_spec_message(base_url: str, identity: Any) -> None:
    thing = identity.things["thing-a1"].id
    headers = {"Authorization": f"Bearer {identity.alice.token}"}
    for query in ("offset=abc", "limit=1.5", "limit=-1"):
        response = httpx.get(f"{base_url}/things/{thing}/serials?{query}", headers=headers)
        assert (response.status_code, response.json()) == (
            400, {"error": "invalid query parameters"}), query
    response = httpx.get(f"{base_url}/things/{thing}/serials?limit=201", headers=headers)
    assert response.json() == {"error": "invalid limit size"}


def test_docs_pages_name_only_local_assets(base_url: str) -> None:
    for path in ("/schema", "/schema/swagger"):
        page = httpx.get(f"{base_url}{path}")
        assert page.status_code == 200
        assert "https://" not in page.text.split("<body>")[0]
        assert "/schema/static/swagger-ui-bundle.js" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        assert httpx.get(f"{base_url}/schema/static/{asset}").status_code == 200


def test_the_message_check_refuses_an_undocumented_message(document: dict[str, Any]) -> None:
    operation = SimpleNamespace(definition=SimpleNamespace(
        raw=_operation(document, "get", "/certs/{serial}")))
    case = SimpleNamespace(operation=operation)

    def answer(message: str) -> SimpleNamespace:
        return SimpleNamespace(status_code=404, content=b"x",
                               headers={"content-type": ["application/json"]},
                               json=lambda: {"error": message})

    assert documented_error_message(None, answer("entity not found"), case) is None
    with pytest.raises(AssertionError, match="not documented"):
        documented_error_message(None, answer("no such thing"), case)
