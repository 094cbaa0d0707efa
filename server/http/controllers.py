"""One controller per resource: certificates, a thing's certificates, the CRL."""

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter

from authority import errors as msg
from authority import metrics as domain_metrics
from authority.durations import rfc3339
from authority.errors import BadRequest, UnsupportedContentType
from authority.requests import list_query
from authority.service import CertificatePage, CertsService
from server import metrics
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

Service = NamedDependency[CertsService]


async def json_body(request: Request) -> Any:
    """The request body as JSON; 415 for another content type, 400 when it is not JSON."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise UnsupportedContentType("unsupported content type")
    try:
        return msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        raise BadRequest(msg.MALFORMED) from None


class CertsController(Controller):
    path = "/certs"
    tags = ["certs"]

    @post("/", status_code=201, summary="Issue a certificate for a thing")
    async def issue(self, request: Request, service: Service) -> IssueBody:
        with metrics.observe("issue_cert"):
            token = bearer_token(request)
            body = service.issue_request(await json_body(request))
            view = await service.issue(token, body)
            domain_metrics.CERTS_ISSUED.inc()
            return issue_body(view)

    @get("/{serial:str}", summary="View a certificate (never its private key)")
    async def view(self, request: Request, serial: FromPath[str], service: Service) -> ViewBody:
        with metrics.observe("view_cert"):
            return view_body(await service.view(bearer_token(request), serial))

    @put("/{serial:str}", status_code=201, summary="Renew a certificate close to expiry")
    async def renew(self, request: Request, serial: FromPath[str], service: Service) -> IssueBody:
        with metrics.observe("renew_cert"):
            view = await service.renew(bearer_token(request), serial)
            domain_metrics.CERTS_ISSUED.inc()
            return issue_body(view)

    @post("/{serial:str}/rotate", status_code=201, summary="Replace a certificate now")
    async def rotate(self, request: Request, serial: FromPath[str], service: Service) -> IssueBody:
        with metrics.observe("rotate_cert"):
            token = bearer_token(request)
            body = service.issue_request(await json_body(request))
            view = await service.rotate(token, serial, body)
            domain_metrics.CERTS_ISSUED.inc()
            return issue_body(view)

    @delete("/{serial:str}", status_code=200, summary="Revoke a certificate")
    async def revoke(self, request: Request, serial: FromPath[str], service: Service) -> RevokeBody:
        with metrics.observe("revoke_cert"):
            moment = rfc3339(await service.revoke(bearer_token(request), serial))
            domain_metrics.CERTS_REVOKED.inc()
            return RevokeBody(revocation_time=moment, RevocationTime=moment)

    @get("/{serial:str}/download", summary="A device fetches its certificate and key, once")
    async def download(
        self, request: Request, serial: FromPath[str], service: Service
    ) -> IssueBody:
        with metrics.observe("download_cert"):
            key_type, key = thing_key(request)
            return issue_body(await service.download(key_type, key, serial))


def _serials_body(page: CertificatePage) -> SerialsBody:
    return SerialsBody(
        total=page.total, offset=page.offset, limit=page.limit,
        certs=[SerialItem(thing_id=c.thing_id, cert_serial=c.serial,
                          expires_at=rfc3339(c.expires_at), downloaded=c.downloaded)
               for c in page.certs],
        serials=[c.serial for c in page.certs],
    )


def list_params(
    offset: Annotated[str | None, QueryParameter(name="offset")] = None,
    limit: Annotated[str | None, QueryParameter(name="limit")] = None,
    serial: Annotated[str | None, QueryParameter(name="serial")] = None,
    expires_from: Annotated[str | None, QueryParameter(name="from")] = None,
    expires_to: Annotated[str | None, QueryParameter(name="to")] = None,
) -> dict[str, str]:
    """The list routes' query parameters as given; checked after the caller's token."""
    values = {"offset": offset, "limit": limit, "serial": serial, "from": expires_from,
              "to": expires_to}
    return {name: value for name, value in values.items() if value is not None}


class ThingsController(Controller):
    tags = ["things"]
    dependencies = {"list_params": Provide(list_params, sync_to_thread=False)}

    @get(["/things/{thing_id:str}/serials", "/svccerts/things/{thing_id:str}/serials"],
         summary="List a thing's certificate serials")
    async def serials(
        self, request: Request, thing_id: FromPath[str], service: Service,
        list_params: NamedDependency[dict[str, str]],
    ) -> SerialsBody:
        with metrics.observe("list_serials"):
            token = bearer_token(request)
            query = list_query(list_params)
            return _serials_body(await service.list_certificates(token, thing_id, query))

    @get("/things/{thing_id:str}/certs", summary="List a thing's certificates")
    async def certs(
        self, request: Request, thing_id: FromPath[str], service: Service,
        list_params: NamedDependency[dict[str, str]],
    ) -> CertsBody:
        with metrics.observe("list_certs"):
            token = bearer_token(request)
            query = list_query(list_params)
            page = await service.list_certificates(token, thing_id, query)
            return CertsBody(total=page.total, offset=page.offset, limit=page.limit,
                             certs=[view_body(view) for view in page.certs])


class CrlController(Controller):
    tags = ["crl"]

    @get("/crl", summary="The current CRL, DER", media_type="application/pkix-crl")
    async def der(self, service: Service) -> Response[bytes]:
        crl = await service.current_crl()
        return Response(crl.der, media_type="application/pkix-crl")

    @get("/crl.pem", summary="The current CRL, PEM", media_type="application/x-pem-file")
    async def pem(self, service: Service) -> Response[str]:
        crl = await service.current_crl()
        return Response(crl.pem, media_type="application/x-pem-file")
