"""What the sync and the async client share around one request: httpx settings, mapping
transport failures to SDK errors, and the decision to retry."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from certs_sdk._calls import Call
from certs_sdk.errors import CertsError, ConnectionFailed, Timeout
from certs_sdk.retry import RetryEvent, RetryPolicy

DEFAULT_URL = "http://localhost:8204"
DEFAULT_TIMEOUT = 10.0
Verify = ssl.SSLContext | str | bool


def client_options(url: str, timeout: float | httpx.Timeout, verify: Verify,
                   cert: str | tuple[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for httpx.Client / httpx.AsyncClient."""
    if isinstance(verify, str) or cert is not None:
        context = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        if cert is not None:
            certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
            context.load_cert_chain(certfile, keyfile)
        verify = context
    return {"base_url": url.rstrip("/"), "timeout": timeout, "verify": verify}


def request_options(call: Call[Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"headers": call.headers()}
    if call.params:
        options["params"] = dict(call.params)
    if call.body is not None:
        options["json"] = dict(call.body)
    return options


def failure(exc: httpx.TransportError, attempts: int) -> CertsError:
    """The SDK error for a request that got no response (no URL or header in the text)."""
    if isinstance(exc, httpx.LocalProtocolError):
        return CertsError(f"request could not be sent ({type(exc).__name__})", attempts=attempts)
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return Timeout(f"no answer within the timeout ({type(exc).__name__})", attempts=attempts)
    return ConnectionFailed(f"cannot reach the service ({type(exc).__name__})",
                            attempts=attempts)


def retry_event(call: Call[Any], policy: RetryPolicy, attempt: int,
                response: httpx.Response | None,
                error: httpx.TransportError | None) -> RetryEvent | None:
    """The wait before another attempt, or None when the outcome is final."""
    if not call.repeatable or attempt >= policy.attempts:
        return None
    if response is not None:
        if response.status_code != 503:
            return None
        reason = f"503 {_short(response)}"
        delay = policy.delay(attempt, response.headers.get("retry-after"))
    elif isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        reason = "connection failed"
        delay = policy.delay(attempt)
    else:
        return None
    return RetryEvent(call.method, call.path, attempt, reason, delay)


def _short(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""
