"""Per request: one JSON log line, the request metrics, a server span and the X-Request-Id.

The middleware opens the request's context (``authority.context``) that the use cases fill in
with the actor, the thing and the serials; the log line is written when the response has been
sent: method, route (the template), path, status, ms, request id, client, actor, thing,
serials, the error message of a 4xx (``reason``), and the trace id when tracing is on. No
header is logged, so no token or thing key is.
"""

import asyncio
import logging
import os
import random
import re
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from authority import context, tracing
from authority.logs import Fields
from authority.metrics import ScrapeFigures
from server import metrics

log = logging.getLogger("certs.http")
REQUEST_ID_HEADER = b"x-request-id"
# An incoming request id is kept when it is short and plain; anything else is replaced.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it is plain, else a new one: 32 hex digits from the
    process's random generator (no system call; an id only tells log lines apart)."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _PLAIN_ID.match(text):
                return text
            break
    return f"{random.getrandbits(128):032x}"


def open_request(scope: Scope) -> context.RequestContext:
    """The context of a new request: its id and the client's address."""
    client = scope.get("client")
    return context.RequestContext(request_id=request_id(scope),
                                  client=client[0] if client else None)


def note_reason(message: str) -> None:
    """The error message of the response being sent, for the request's log line."""
    current = context.current()
    if current is not None:
        current.reason = message


def observe_requests(app: ASGIApp) -> ASGIApp:
    """The middleware (see the module's docstring)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        state = open_request(scope)
        route = str(scope.get("path_template") or scope["path"])
        method = str(scope.get("method", ""))
        status = 500
        header = (REQUEST_ID_HEADER, state.request_id.encode("latin-1"))

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with context.request_scope(state):
            if tracing.enabled():
                with tracing.server_span(f"{method} {route}", scope.get("headers", ()), {
                        "http.request.method": method, "http.route": route}) as span:
                    try:
                        await app(scope, receive, capture)
                    finally:
                        span.set_attribute("http.response.status_code", status)
                        finish_request(state, method, route, scope["path"], status, started)
            else:
                try:
                    await app(scope, receive, capture)
                finally:
                    finish_request(state, method, route, scope["path"], status, started)

    return middleware


def finish_request(state: context.RequestContext, method: str, route: str, path: str,
                   status: int, started: float) -> None:
    """The request's metrics (when its operation is named) and its log line."""
    seconds = time.perf_counter() - started
    if state.operation is not None:
        metrics.record(state.operation, status, seconds)
    if not log.isEnabledFor(logging.INFO):
        return
    line = Fields(method=method, route=route, path=path, status=status,
                  ms=round(seconds * 1000, 2), request_id=state.request_id,
                  client=state.client, actor=state.actor, thing_id=state.thing_id,
                  serials=state.serials)
    if 400 <= status < 500 and state.reason:
        line["reason"] = state.reason
    ids = tracing.trace_ids()
    if ids is not None:
        line["trace_id"], line["span_id"] = ids
    log.info(line)


async def metrics_text(components: Any) -> bytes:
    """The Prometheus text of every process (this one alone without a multiprocess dir),
    after the figures computed at scrape time are brought up to date."""
    if components is not None:
        figures: ScrapeFigures | None = getattr(components, "_certs_figures", None)
        if figures is None:
            service = components.service
            figures = ScrapeFigures(service.authority.not_after, service.settings.crl_path,
                                    service.settings.renew_window,
                                    lambda before: components.store.count_expiring(before))
            components._certs_figures = figures
        try:
            await asyncio.to_thread(figures.refresh)
        except Exception as exc:  # noqa: BLE001 - the other figures are still worth serving
            logging.getLogger("certs.metrics").warning(
                Fields(msg="metrics figures not refreshed", error=type(exc).__name__))
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        _forget_dead_processes(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _forget_dead_processes(directory: str) -> None:
    """Drop the "live" gauges (HSM pool figures) of processes that have exited, e.g. a worker
    that was restarted, so that they are summed over living processes only."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for pid in {int(m.group(1)) for m in map(_LIVE_FILE.match, names) if m}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:
            continue
