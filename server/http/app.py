"""The Litestar application: routes, error bodies, health, metrics and request logs."""

import json
import logging
import os
import time
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from authority.errors import ServiceError
from authority.logs import configure_logging
from authority.service import CertsService
from authority.settings import Settings, load_settings
from authority.wiring import Components, build
from server.http.controllers import CertsController, CrlController, ThingsController
from server.http.health import health

VERSION = "0.1.0"
# Litestar adds the charset itself; the text exposition format 0.0.4 is what every scraper reads.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"
log = logging.getLogger("certs.http")


def _service(state: State) -> CertsService:
    service: CertsService = state.components.service
    return service


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


def _service_error(_: Request, exc: ServiceError) -> Response[dict[str, str]]:
    return _error(exc.status, exc.message)


def _http_error(_: Request, exc: HTTPException) -> Response[dict[str, str]]:
    if exc.status_code == 400:
        return _error(400, "invalid query parameters")
    return _error(exc.status_code, exc.detail.lower() if exc.detail else "request failed")


def _internal_error(_: Request, exc: Exception) -> Response[dict[str, str]]:
    log.error("unhandled %s", type(exc).__name__)
    return _error(500, "internal server error")


@get("/metrics", summary="Prometheus metrics", tags=["health"], media_type="text/plain")
async def metrics_endpoint() -> Response[bytes]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=METRICS_MEDIA_TYPE)
    return Response(generate_latest(), media_type=METRICS_MEDIA_TYPE)


@get("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> Response[dict[str, Any]]:
    return Response(request.app.openapi_schema.to_schema())


def _request_log(app: ASGIApp) -> ASGIApp:
    """One structured line per request: method, path, status, duration (no headers)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(json.dumps({"method": scope.get("method"), "path": scope["path"],
                                     "status": status,
                                     "ms": round((time.perf_counter() - started) * 1000, 2)}))

    return middleware


def create_app(settings: Settings | None = None, components: Components | None = None
               ) -> Litestar:
    """The app; components are built on startup in the serving process unless given."""
    state = State({"components": components, "commit": "", "build_time": ""})

    async def startup(app: Litestar) -> None:
        if app.state.components is None:
            configured = settings or load_settings()
            configure_logging(configured.log_level)
            app.state.components = build(configured)
        # Open the identity channel now so the first request does not pay for it.
        await app.state.components.things.ready(timeout=2.0)
        app.state.components.service.start_first_crl()

    async def shutdown(app: Litestar) -> None:
        built: Components | None = app.state.components
        if built is not None:
            await built.service.crl_ready()
            await built.things.close()
            built.service.close()

    return Litestar(
        route_handlers=[CertsController, ThingsController, CrlController, health,
                        metrics_endpoint, openapi_json],
        dependencies={"service": Provide(_service, sync_to_thread=False)},
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        on_startup=[startup],
        on_shutdown=[shutdown],
        middleware=[_request_log],
        state=state,
        openapi_config=OpenAPIConfig(title="certs", version=VERSION, path="/schema"),
        debug=False,
        logging_config=None,
    )

