"""One controller per resource: certificates, a thing's certificates (the CA and the CRL
have modules of their own)."""

from typing import Annotated, Any

import msgspec
from litestar import Controller, HttpMethod, Request, Response, delete, get, post, put, route
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from authority import errors as msg
from authority.durations import rfc3339
from authority.errors import BadRequest, UnsupportedContentType
from authority.requests import list_query
from authority.service import CertsService
from repository import SerialPage
from server import metrics
from server.http import operations as doc
from server.http.auth import bearer_token, thing_key
from server.http.bodies import (
    CertsBody,
    IssueBody,
    RevokeBody,
    SerialItem,
    SerialsBody,
    ViewBody,
    issue_body,
    view_body,
)
from server.http.openapi import FROM, LIMIT, OFFSET, SERIAL, TO, SerialPath, ThingPath
from server.http.routes import get_or_head

Service = NamedDependency[CertsService]


async def json_body(request: Request) -> Any:
    """The request body as JSON; 415 without a JSON content type, 400 when it is not JSON."""
    content_type = request.headers.get("content-type") or ""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedContentType("unsupported content type")
    try:
        return msgspec.json.decode(await request.body())
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested too deep
        raise BadRequest(msg.MALFORMED) from None


class CertsController(Controller):
    path = "/certs"
    tags = ["certs"]

    # Litestar 2 answers OPTIONS on a path with the methods of the first handler registered
    # there only (litestar#4169, fixed in 3); handlers register in name order, so this one,
    # first, answers for the path with all of them.
    @route("/{serial:str}", http_method=[HttpMethod.OPTIONS], include_in_schema=False,
           status_code=204)
    async def allow(self, request: Request) -> Response[None]:
        methods = request.app.route_handler_method_map[f"{self.path}/{{serial:str}}"]
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})

    @post("/", status_code=201, **doc.ISSUE)
    async def issue(self, request: Request, service: Service) -> IssueBody:
        with metrics.observe("issue_cert"):
            token = bearer_token(request)
            body = service.issue_request(await json_body(request))
            view = await service.issue(token, body)
            return issue_body(view)

    @get_or_head("/{serial:str}", **doc.VIEW)
    async def view(self, request: Request, serial: SerialPath, service: Service) -> ViewBody:
        with metrics.observe("view_cert"):
            return view_body(await service.view(bearer_token(request), serial))

    @put("/{serial:str}", status_code=201, **doc.RENEW)
    async def renew(self, request: Request, serial: SerialPath, service: Service) -> IssueBody:
        with metrics.observe("renew_cert"):
            view = await service.renew(bearer_token(request), serial)
            return issue_body(view)

    @post("/{serial:str}/rotate", status_code=201, **doc.ROTATE)
    async def rotate(self, request: Request, serial: SerialPath, service: Service) -> IssueBody:
        with metrics.observe("rotate_cert"):
            token = bearer_token(request)
            body = service.issue_request(await json_body(request))
            view = await service.rotate(token, serial, body)
            return issue_body(view)

    @delete("/{serial:str}", status_code=200, **doc.REVOKE)
    async def revoke(self, request: Request, serial: SerialPath, service: Service) -> RevokeBody:
        with metrics.observe("revoke_cert"):
            moment = rfc3339(await service.revoke(bearer_token(request), serial))
            return RevokeBody(revocation_time=moment, RevocationTime=moment)

    @get("/{serial:str}/download", **doc.DOWNLOAD)
    async def download(
        self, request: Request, serial: SerialPath, service: Service
    ) -> IssueBody:
        with metrics.observe("download_cert"):
            key_type, key = thing_key(request)
            return issue_body(await service.download(key_type, key, serial))


def _serials_body(page: SerialPage) -> SerialsBody:
    return SerialsBody(
        total=page.total, offset=page.offset, limit=page.limit,
        certs=[SerialItem(thing_id=c.thing_id, cert_serial=c.serial,
                          expires_at=rfc3339(c.expires_at), downloaded=c.downloaded)
               for c in page.items],
        serials=[c.serial for c in page.items],
    )


def list_params(
    service: Service,
    offset: Annotated[str | None, QueryParameter(name="offset", schema_extra=OFFSET)] = None,
    limit: Annotated[str | None, QueryParameter(name="limit", schema_extra=LIMIT)] = None,
    serial: Annotated[str | None, QueryParameter(name="serial", schema_extra=SERIAL)] = None,
    expires_from: Annotated[str | None, QueryParameter(name="from", schema_extra=FROM)] = None,
    expires_to: Annotated[str | None, QueryParameter(name="to", schema_extra=TO)] = None,
) -> dict[str, str]:
    """The list routes' query parameters as given; checked after the caller's token.

    It takes the service only to be resolved after it: Litestar resolves dependencies of the
    same depth together in an anyio task group, which costs more than the rest of a list.
    """
    del service
    values = {"offset": offset, "limit": limit, "serial": serial, "from": expires_from,
              "to": expires_to}
    return {name: value for name, value in values.items() if value is not None}


async def _list_serials(request: Request, thing_id: str, service: CertsService,
                        params: dict[str, str]) -> SerialsBody:
    with metrics.observe("list_serials"):
        token = bearer_token(request)
        query = list_query(params)
        return _serials_body(await service.list_serials(token, thing_id, query))


class ThingsController(Controller):
    tags = ["things"]
    dependencies = {"list_params": Provide(list_params, sync_to_thread=False)}

    @get_or_head("/things/{thing_id:str}/serials", **doc.LIST_SERIALS)
    async def serials(
        self, request: Request, thing_id: ThingPath, service: Service,
        list_params: NamedDependency[dict[str, str]],
    ) -> SerialsBody:
        return await _list_serials(request, thing_id, service, list_params)

    @get_or_head("/svccerts/things/{thing_id:str}/serials", **doc.LIST_SERIALS_SVC)
    async def svc_serials(
        self, request: Request, thing_id: ThingPath, service: Service,
        list_params: NamedDependency[dict[str, str]],
    ) -> SerialsBody:
        return await _list_serials(request, thing_id, service, list_params)

    @get_or_head("/things/{thing_id:str}/certs", **doc.LIST_CERTS)
    async def certs(
        self, request: Request, thing_id: ThingPath, service: Service,
        list_params: NamedDependency[dict[str, str]],
    ) -> CertsBody:
        with metrics.observe("list_certs"):
            token = bearer_token(request)
            query = list_query(list_params)
            page = await service.list_certificates(token, thing_id, query)
            return CertsBody(total=page.total, offset=page.offset, limit=page.limit,
                             certs=[view_body(view) for view in page.certs])
