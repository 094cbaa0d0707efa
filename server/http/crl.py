"""``GET /crl`` and ``/crl.pem``: the current CRL, with its number as ETag and thisUpdate as
Last-Modified, so a client polls it cheaply (304 when it has not changed; SPEC sections 3, 7)."""

from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated

from litestar import Controller, HttpMethod, Response, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter

from authority.crl_publisher import PublishedCrl
from authority.service import CertsService
from server.http.openapi import (
    CRL_UNAVAILABLE,
    DocumentedOperation,
    errors,
    operation_id,
    string_param,
)

DER = "application/pkix-crl"
PEM = "application/x-pem-file"
_GET_HEAD = [HttpMethod.GET, HttpMethod.HEAD]
_HEADERS = [
    ResponseHeader(name="ETag", value='"1"', documentation_only=True,
                   description="The CRL number, quoted, e.g. `\"42\"`."),
    ResponseHeader(name="Last-Modified", value="Tue, 01 Dec 2026 21:00:00 GMT",
                   documentation_only=True,
                   description="The CRL's thisUpdate, an HTTP date."),
]
_RESPONSES = {
    304: ResponseSpec(None, description="Not modified: the client's copy is current (no body)."),
    **errors({503: CRL_UNAVAILABLE}),
}
IfNoneMatch = Annotated[str | None, HeaderParameter(name="If-None-Match", required=False,
                                              schema_extra=string_param(
    "ETags the client holds; 304 when one is the current CRL's (or `*`)."))]
IfModifiedSince = Annotated[str | None, HeaderParameter(name="If-Modified-Since", required=False,
                                                  schema_extra=string_param(
    "An HTTP date; without If-None-Match, 304 unless the CRL is newer."))]


def etag(crl: PublishedCrl) -> str:
    return f'"{crl.number}"'


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _not_newer(crl: PublishedCrl, header: str) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        return False
    return crl.this_update.replace(microsecond=0) <= since


def not_modified(crl: PublishedCrl, if_none_match: str | None,
                 if_modified_since: str | None) -> bool:
    """RFC 9110 section 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    if if_none_match is not None:
        tags = _tags(if_none_match)
        return "*" in tags or etag(crl) in tags
    return if_modified_since is not None and _not_newer(crl, if_modified_since)


def http_date(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0), usegmt=True)


def _answer(crl: PublishedCrl, body: bytes, media_type: str, if_none_match: str | None,
            if_modified_since: str | None) -> Response[bytes]:
    headers = {"ETag": etag(crl), "Last-Modified": http_date(crl.this_update)}
    if not_modified(crl, if_none_match, if_modified_since):
        return Response(b"", status_code=304, headers=headers, media_type=media_type)
    return Response(body, headers=headers, media_type=media_type)


class CrlController(Controller):
    tags = ["crl"]

    @route("/crl", http_method=_GET_HEAD, media_type=DER, operation_id=operation_id("getCrl"),
           summary="The current CRL, DER", response_description="The CRL, DER",
           response_headers=_HEADERS, responses=_RESPONSES,
           operation_class=DocumentedOperation,
           description="Signed by the CA's key in the HSM; re-signed after every revocation "
                       "and before half its validity has passed. Anyone may fetch it.")
    async def der(self, service: NamedDependency[CertsService], if_none_match: IfNoneMatch = None,
                  if_modified_since: IfModifiedSince = None) -> Response[bytes]:
        crl = await service.current_crl()
        return _answer(crl, crl.der, DER, if_none_match, if_modified_since)

    @route("/crl.pem", http_method=_GET_HEAD, media_type=PEM,
           operation_id=operation_id("getCrlPem"), summary="The current CRL, PEM",
           response_description="The CRL, PEM",
           response_headers=_HEADERS, responses=_RESPONSES, operation_class=DocumentedOperation,
           description="The same CRL as `/crl`, PEM (`-----BEGIN X509 CRL-----`).")
    async def pem(self, service: NamedDependency[CertsService], if_none_match: IfNoneMatch = None,
                  if_modified_since: IfModifiedSince = None) -> Response[bytes]:
        crl = await service.current_crl()
        return _answer(crl, crl.pem.encode(), PEM, if_none_match, if_modified_since)
