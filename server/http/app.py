"""The Litestar application: routes, error bodies, health, metrics and request logs."""

import logging
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException

from authority import tracing
from authority.errors import ServiceError
from authority.logs import configure_logging
from authority.service import CertsService
from authority.settings import Settings, load_settings
from authority.wiring import Components, build
from server.http.ca import CaController
from server.http.controllers import CertsController, ThingsController
from server.http.crl import CrlController
from server.http.docs import openapi_config
from server.http.est import EstController
from server.http.health import health
from server.http.limits import MAX_BODY_BYTES, request_limits
from server.http.observability import metrics_text, note_reason, observe_requests
from server.http.ocsp import OcspController
from server.http.operations import METRICS
from server.http.routes import get_or_head

VERSION = "0.1.0"
# Litestar adds the charset itself; the text exposition format 0.0.4 is what every scraper reads.
METRICS_MEDIA_TYPE = "text/plain; version=0.0.4"
log = logging.getLogger("certs.http")


def _service(state: State) -> CertsService:
    service: CertsService = state.components.service
    return service


def _error(status: int, message: str, headers: dict[str, str] | None = None
           ) -> Response[dict[str, str]]:
    note_reason(message)
    return Response({"error": message}, status_code=status, headers=headers)


def _service_error(_: Request, exc: ServiceError) -> Response[dict[str, str]]:
    return _error(exc.status, exc.message)


def _http_error(_: Request, exc: HTTPException) -> Response[dict[str, str]]:
    if exc.status_code == 400:
        return _error(400, "invalid query parameters")
    # Litestar's own headers stay: `Allow` on a 405 (RFC 9110).
    return _error(exc.status_code, exc.detail.lower() if exc.detail else "request failed",
                  dict(exc.headers) if exc.headers else None)


def _internal_error(_: Request, exc: Exception) -> Response[dict[str, str]]:
    log.error("unhandled %s", type(exc).__name__)
    return _error(500, "internal server error")


@get_or_head("/metrics", **METRICS)
async def metrics_endpoint(request: Request) -> Response[bytes]:
    return Response(await metrics_text(request.app.state.components),
                    media_type=METRICS_MEDIA_TYPE)


@get_or_head("/openapi.json", include_in_schema=False)
async def openapi_json(request: Request) -> Response[dict[str, Any]]:
    return Response(request.app.openapi_schema.to_schema())


def create_app(settings: Settings | None = None, components: Components | None = None
               ) -> Litestar:
    """The app; components are built on startup in the serving process unless given."""
    state = State({"components": components, "commit": "", "build_time": ""})

    async def startup(app: Litestar) -> None:
        if app.state.components is None:
            configured = settings or load_settings()
            configure_logging(configured.log_level)
            tracing.setup(configured.jaeger_url)
            app.state.components = build(configured)
        # Open the identity channel now so the first request does not pay for it.
        await app.state.components.things.ready(timeout=2.0)
        app.state.components.service.start_first_crl()

    async def shutdown(app: Litestar) -> None:
        built: Components | None = app.state.components
        if built is not None:
            await built.service.crl_ready()
            await built.things.close()
            await built.service.close_identity()
            await built.store.close_reads()
            built.service.close()
        tracing.shutdown()

    return Litestar(
        route_handlers=[CertsController, ThingsController, CaController, CrlController, health,
                        metrics_endpoint, openapi_json, EstController, OcspController],
        dependencies={"service": Provide(_service, sync_to_thread=False)},
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
        on_startup=[startup],
        on_shutdown=[shutdown],
        middleware=[observe_requests, request_limits],
        request_max_body_size=MAX_BODY_BYTES,
        state=state,
        openapi_config=openapi_config(VERSION),
        debug=False,
        logging_config=None,
    )

