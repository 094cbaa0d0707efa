"""The API docs served by the service itself: Swagger UI's files from the `swagger_ui_bundle`
package under /schema/static, so /schema works on a machine without internet.

Swagger UI reads OpenAPI 3.1 from its version 5 on (the `swagger-ui-bundle-v2` distribution);
the `swagger-ui-bundle` 1.x one ships 4.15, which refuses a 3.1 document outright, so with it
the page is given the same document labelled 3.0.3 (the endpoints still serve it as 3.1)."""

from functools import cache
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from litestar import Request, Router
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, Tag
from litestar.static_files import create_static_files_router
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

from server.http.openapi import SECURITY_SCHEMES

SCHEMA_PATH = "/schema"
STATIC = f"{SCHEMA_PATH}/static"
DESCRIPTION = """\
Issues and manages X.509 client certificates for IoT things (a drop-in replacement for the
Mainflux certs service). The CA key lives in an HSM; every signature is made there.

Users call the `certs` and `things` routes with `Authorization: Bearer <token>`; a device
downloads its certificate once with `Authorization: Thing <key>` (or `External <key>`). The CA
chain, the CRL, health and metrics are open to anyone. Every error is `{"error": "<message>"}`;
besides the statuses each route lists, any request may get 405 (`method not allowed`), 400
`invalid query parameters` for a query string that is not clean UTF-8, and 431 (`request header
fields too large`) for headers over 16 KiB.
"""
TAGS = [
    Tag(name="certs", description="A thing's certificates by serial (user token)."),
    Tag(name="things", description="The certificates of a thing (user token)."),
    Tag(name="ca", description="The CA chain."),
    Tag(name="crl", description="The certificate revocation list."),
    Tag(name="health", description="Operations."),
]


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI from the service's own static route instead of a CDN."""

    def __init__(self, path: str | list[str]) -> None:
        super().__init__(
            path=path,
            js_url=f"{STATIC}/swagger-ui-bundle.js",
            css_url=f"{STATIC}/swagger-ui.css",
            standalone_preset_js_url=f"{STATIC}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{STATIC}/favicon-32x32.png'>",
        )

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        if swagger_ui()[0] < (5,):
            openapi_schema = {**openapi_schema, "openapi": "3.0.3"}
        return super().render(request, openapi_schema)

    def receive_router(self, router: Router) -> None:
        router.register(create_static_files_router(
            path="/static", directories=[static_directory()], include_in_schema=False,
            send_as_attachment=False))


# Routes declared outside the controllers, named by their handler's function.
_IDS = {"health": "health", "metrics_endpoint": "metrics"}


def operation_ids(handler: HTTPRouteHandler, method: Method | HttpMethod,
                  path: list[str | PathParameterDefinition]) -> str:
    """The id of a route whose handler names none: readable for health and metrics."""
    name = _IDS.get(handler.handler_name, handler.handler_name)
    return f"{name}Head" if method == HttpMethod.HEAD else name


@cache
def swagger_ui() -> tuple[tuple[int, ...], Path]:
    """The newest Swagger UI the installed bundle holds: its version and its directory."""
    vendor = Path(swagger_ui_bundle.__file__).parent / "vendor"
    found = [(tuple(int(part) for part in directory.name.removeprefix("swagger-ui-").split(".")),
              directory) for directory in vendor.glob("swagger-ui-*")]
    return max(found)


def static_directory() -> Path:
    return swagger_ui()[1]


def openapi_config(version: str) -> OpenAPIConfig:
    """/schema and /schema/swagger: Swagger UI; /schema/openapi.json: the document."""
    return OpenAPIConfig(
        title="certs", version=version, description=DESCRIPTION, path=SCHEMA_PATH, tags=TAGS,
        components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        operation_id_creator=operation_ids,
        render_plugins=[OfflineSwagger(path=["/", "/swagger"]), JsonRenderPlugin()],
    )
