"""``POST /ocsp`` and ``GET /ocsp/{request}`` as a small ASGI app in front of Litestar.

An OCSP answer costs little more than a store read and a signature; Litestar's request
handling (routing, dependencies, response objects, middleware) cost about as much again. The
front answers the two OCSP forms itself, with what the middleware gives every request: the
X-Request-Id header, the request metrics (``ocsp``) and the request's log line. Anything
else goes to the app behind it unchanged: other paths, ``HEAD`` and an empty ``GET /ocsp``,
a request with a query string, without a Content-Length or with headers or a body over the
limits (Litestar's refusals then apply), and every request while tracing is on (the
middleware's server span then covers it).
"""

import time
from collections.abc import Callable
from typing import cast

from litestar import Litestar
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from authority import context, tracing
from authority.ocsp import ocsp_for
from authority.service import CertsService
from hsm.ocsp import MALFORMED_REQUEST
from hsm.ocsp_request import MalformedOcspRequest, decode_get_request
from server.http.app import create_app as create_litestar
from server.http.limits import MAX_BODY_BYTES, headers_too_large
from server.http.observability import REQUEST_ID_HEADER, finish_request, open_request

OPERATION = "ocsp"
_PREFIX = "/ocsp/"
_POST_ROUTE, _GET_ROUTE = "/ocsp", "/ocsp/{encoded:path}"
_HEADERS = [(b"content-type", b"application/ocsp-response"), (b"cache-control", b"no-store")]

ServiceOf = Callable[[], CertsService | None]


def ocsp_front(app: ASGIApp, service_of: ServiceOf) -> ASGIApp:
    """``app`` with the OCSP requests answered in front of it; ``service_of`` gives the
    service once the app's startup has built it (None before: ``app`` answers)."""

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        http = cast(HTTPScope, scope) if scope["type"] == "http" else None
        route = _route(http) if http is not None and not tracing.enabled() else None
        service = service_of() if route is not None else None
        if http is None or service is None or (route == _POST_ROUTE
                                               and _content_length(http) is None):
            await app(scope, receive, send)
            return
        if route == _POST_ROUTE:
            await _answer(service, _POST_ROUTE, http, send, await _body(receive))
            return
        try:
            der = decode_get_request(http["path"][len(_PREFIX):])
        except MalformedOcspRequest:
            der = b""
        await _answer(service, _GET_ROUTE, http, send, der)

    return front


def _route(scope: HTTPScope) -> str | None:
    """The OCSP route the front answers, if it is one (see the module's docstring)."""
    path, method = scope["path"], scope["method"]
    if scope.get("query_string"):
        return None
    if method == "POST" and path in ("/ocsp", _PREFIX):
        route = _POST_ROUTE
    elif method == "GET" and path.startswith(_PREFIX) and len(path) > len(_PREFIX):
        route = _GET_ROUTE
    else:
        return None
    if headers_too_large(scope):
        return None
    return route


def _content_length(scope: HTTPScope) -> int | None:
    """The declared body size when it is within the limit; None otherwise."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if 0 <= length <= MAX_BODY_BYTES else None
    return None


async def _body(receive: Receive) -> bytes:
    """The request body; past the limit (a client that sent more than it declared) only the
    first bytes are kept: the request then does not parse."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away
        chunk = message.get("body", b"")
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(service: CertsService, route: str, scope: HTTPScope, send: Send,
                  der: bytes) -> None:
    started = time.perf_counter()
    state = open_request(scope)
    state.operation = OPERATION
    with context.request_scope(state):
        answer = await ocsp_for(service).answer(der) if der else MALFORMED_REQUEST
        headers = [*_HEADERS, (b"content-length", str(len(answer)).encode()),
                   (REQUEST_ID_HEADER, state.request_id.encode("latin-1"))]
        status = 500
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer, "more_body": False})
            status = 200
        finally:
            finish_request(state, scope["method"], route, scope["path"], status, started)


def with_ocsp_front(app: Litestar) -> ASGIApp:
    """The service's Litestar ``app`` (``server.http.app.create_app``) with the OCSP front,
    which takes the service from the app's state once its startup has built it."""

    def service_of() -> CertsService | None:
        components = app.state.components
        return None if components is None else components.service

    return ocsp_front(app, service_of)


def create_app() -> ASGIApp:
    """``server.http.app.create_app`` with the OCSP front: a factory for an ASGI server."""
    return with_ocsp_front(create_litestar())
