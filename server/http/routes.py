"""Route decorators shared by the controllers."""

from typing import Any

from litestar import route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.types import Method


def get_or_head(path: str | list[str], **kwargs: Any) -> HTTPRouteHandler:
    """A GET route that also answers HEAD (SPEC section 3): the same status and headers, and
    no body (the HTTP server drops it). A string ``operation_id`` names the GET operation; the
    HEAD one gets ``Head`` added (without one, the app's operation_id_creator names both)."""
    given = kwargs.get("operation_id")
    if isinstance(given, str):
        def operation_id(handler: HTTPRouteHandler, method: Method, components: list[Any]) -> str:
            return f"{given}Head" if method == HttpMethod.HEAD else str(given)
        kwargs["operation_id"] = operation_id
    return route(path, http_method=[HttpMethod.GET, HttpMethod.HEAD], **kwargs)
