"""Schemathesis hooks for test_schemathesis.py: a JSON error body's message must be one that
the document lists for that operation and status (its examples); OCSP request bodies are sent
as the bytes generated."""

from typing import Any

import schemathesis


@schemathesis.check
def documented_error_message(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400 or response.status_code == 405 or not response.content:
        return None
    if not response.headers.get("content-type", [""])[0].startswith("application/json"):
        return None
    documented = case.operation.definition.raw.get("responses", {}).get(
        str(response.status_code))
    if documented is None:
        return None  # status_code_conformance reports it
    examples = documented.get("content", {}).get("application/json", {}).get("examples", {})
    messages = {example["value"]["error"] for example in examples.values()
                if isinstance(example.get("value"), dict) and "error" in example["value"]}
    error = response.json().get("error")
    if messages and error not in messages:
        raise AssertionError(f"{response.status_code} {error!r} is not documented: {messages}")
    return None


@schemathesis.serializer("application/ocsp-request")
def ocsp_request(ctx: Any, value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
