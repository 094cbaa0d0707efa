"""Limits on what a request may carry before any handler reads it (SPEC 3: a 4xx, never a 500):
the size of its headers, and a query string that is valid UTF-8 without NUL characters."""

from urllib.parse import unquote_to_bytes

import msgspec
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from authority import errors as msg

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024  # the largest legitimate body, an RSA-4096 CSR, is under 4 KiB


async def _refuse(send: Send, status: int, message: str) -> None:
    body = msgspec.json.encode({"error": message})
    start: HTTPResponseStartEvent = {
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]}
    await send(start)
    done: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                   "more_body": False}
    await send(done)


def _query_is_clean(raw: bytes) -> bool:
    try:
        decoded = unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in decoded


def headers_too_large(scope: Scope) -> bool:
    """Whether the request's headers add up to more than MAX_HEADER_BYTES."""
    return sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES


def request_limits(app: ASGIApp) -> ASGIApp:
    """431 for headers over MAX_HEADER_BYTES; 400 for a query string that is not clean text."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if headers_too_large(scope):
                await _refuse(send, 431, "request header fields too large")
                return
            if not _query_is_clean(scope.get("query_string", b"")):
                await _refuse(send, 400, msg.INVALID_QUERY)
                return
        await app(scope, receive, send)

    return middleware
