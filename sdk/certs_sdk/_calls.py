"""The routes of SPEC section 3 as transport-free descriptions, shared by the sync and the async
client: what to send, whether it may be repeated, and how to read the answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from certs_sdk.errors import UnexpectedResponse, error_for
from certs_sdk.models import (
    Certificate,
    CertificatePage,
    Health,
    Revocation,
    SerialPage,
    format_time,
)

T = TypeVar("T")
Ttl = str | int | timedelta


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    read: Callable[[httpx.Response, int], T]  # (response, attempts) -> result, or raises
    params: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    authorization: str | None = field(default=None, repr=False)
    repeatable: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase or "request failed"


def _check(response: httpx.Response, attempts: int, *expected: int) -> None:
    if response.status_code not in expected:
        raise error_for(response.status_code, _message(response), attempts=attempts)


def _json(response: httpx.Response, attempts: int, *expected: int) -> Mapping[str, Any]:
    _check(response, attempts, *expected)
    try:
        body = response.json()
    except ValueError:
        raise UnexpectedResponse("response is not JSON", status=response.status_code,
                                 attempts=attempts) from None
    if not isinstance(body, dict):
        raise UnexpectedResponse("response is not a JSON object", status=response.status_code,
                                 attempts=attempts)
    return body


def _parsed(build: Callable[[Mapping[str, Any]], T], *expected: int
            ) -> Callable[[httpx.Response, int], T]:
    def read(response: httpx.Response, attempts: int) -> T:
        body = _json(response, attempts, *expected)
        try:
            return build(body)
        except (KeyError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(f"unexpected response body ({type(exc).__name__})",
                                     status=response.status_code, attempts=attempts) from None
    return read


def _segment(value: str) -> str:
    return quote(value, safe="")


def _ttl(ttl: Ttl) -> str:
    if isinstance(ttl, timedelta):
        seconds = int(ttl.total_seconds())
        if seconds <= 0:
            raise ValueError("ttl must be positive")
        return f"{seconds}s"
    return str(ttl)


def issue_body(thing_id: str, key_type: str | None, key_bits: int | None, ttl: Ttl | None,
               csr: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"thing_id": thing_id}
    if key_type is not None:
        body["key_type"] = key_type
    if key_bits is not None:
        body["key_bits"] = key_bits
    if ttl is not None:
        body["ttl"] = _ttl(ttl)
    if csr is not None:
        body["csr"] = csr
    return body


def bearer(token: str | None) -> str | None:
    """No token: no header, and the service answers 401 (Unauthorized)."""
    return f"Bearer {token}" if token else None


def issue(token: str | None, body: dict[str, Any]) -> Call[Certificate]:
    return Call("POST", "/certs", _parsed(lambda b: Certificate.from_body(b, downloaded=False),
                                          201),
                body=body, authorization=bearer(token))


def view(token: str | None, serial: str) -> Call[Certificate]:
    return Call("GET", f"/certs/{_segment(serial)}", _parsed(Certificate.from_body, 200),
                authorization=bearer(token), repeatable=True)


def renew(token: str | None, serial: str) -> Call[Certificate]:
    return Call("PUT", f"/certs/{_segment(serial)}",
                _parsed(lambda b: Certificate.from_body(b, downloaded=False), 201),
                authorization=bearer(token))


def rotate(token: str | None, serial: str, body: dict[str, Any]) -> Call[Certificate]:
    return Call("POST", f"/certs/{_segment(serial)}/rotate",
                _parsed(lambda b: Certificate.from_body(b, downloaded=False), 201),
                body=body, authorization=bearer(token))


def revoke(token: str | None, serial: str) -> Call[Revocation]:
    return Call("DELETE", f"/certs/{_segment(serial)}",
                _parsed(lambda b: Revocation.from_body(serial, b), 200),
                authorization=bearer(token), repeatable=True)


def download(thing_key: str, serial: str, external: bool) -> Call[Certificate]:
    scheme = "External" if external else "Thing"
    return Call("GET", f"/certs/{_segment(serial)}/download",
                _parsed(lambda b: Certificate.from_body(b, downloaded=True), 200),
                authorization=f"{scheme} {thing_key}".strip(), repeatable=True)


def list_params(offset: int | None, limit: int | None, serial: str | None,
                expires_from: datetime | None, expires_to: datetime | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if offset is not None:
        params["offset"] = str(offset)
    if limit is not None:
        params["limit"] = str(limit)
    if serial is not None:
        params["serial"] = serial
    if expires_from is not None:
        params["from"] = format_time(expires_from)
    if expires_to is not None:
        params["to"] = format_time(expires_to)
    return params


def list_serials(token: str | None, thing_id: str, params: dict[str, str]) -> Call[SerialPage]:
    return Call("GET", f"/things/{_segment(thing_id)}/serials",
                _parsed(SerialPage.from_body, 200), params=params,
                authorization=bearer(token), repeatable=True)


def list_certs(token: str | None, thing_id: str, params: dict[str, str]) -> Call[CertificatePage]:
    return Call("GET", f"/things/{_segment(thing_id)}/certs",
                _parsed(CertificatePage.from_body, 200), params=params,
                authorization=bearer(token), repeatable=True)


def _bytes(response: httpx.Response, attempts: int) -> bytes:
    _check(response, attempts, 200)
    return response.content


def _text(response: httpx.Response, attempts: int) -> str:
    _check(response, attempts, 200)
    return response.text


def crl_der() -> Call[bytes]:
    return Call("GET", "/crl", _bytes, repeatable=True)


def crl_pem() -> Call[str]:
    return Call("GET", "/crl.pem", _text, repeatable=True)


def ca_pem() -> Call[str]:
    return Call("GET", "/ca.pem", _text, repeatable=True)


def _health(response: httpx.Response, attempts: int) -> Health:
    body = _json(response, attempts, 200, 503)
    try:
        return Health.from_body(response.status_code == 200, body)
    except (KeyError, TypeError, ValueError):
        raise UnexpectedResponse("unexpected health body", status=response.status_code,
                                 attempts=attempts) from None


def health() -> Call[Health]:
    # A 503 here is the answer (the body says what failed), not a reason to retry.
    return Call("GET", "/health", _health)
