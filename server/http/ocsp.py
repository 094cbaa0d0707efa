"""``POST /ocsp`` and ``GET /ocsp/{request}`` (SPEC 13, RFC 6960 appendix A): the answer is
always HTTP 200 with an ``application/ocsp-response``, also for a request that does not parse
(``malformedRequest``) or is about another CA (``unauthorized``)."""

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)

from authority.ocsp import ocsp_for
from authority.service import CertsService
from hsm.ocsp import MALFORMED_REQUEST
from hsm.ocsp_request import MalformedOcspRequest, decode_get_request
from server import metrics
from server.http.openapi import DocumentedOperation
from server.http.routes import get_or_head

REQUEST = "application/ocsp-request"
RESPONSE = "application/ocsp-response"
# Each answer says what the store says now: no cache may keep it past a revocation.
_HEADERS = {"Cache-Control": "no-store"}
_DESCRIPTION = (
    "A BasicOCSPResponse signed in the HSM by the CA key (responder id by key hash): `good`, "
    "`revoked` (time and reason) or `unknown` per requested certificate (CertID with SHA-1 or "
    "SHA-256), the nonce echoed. A request that does not parse gets `malformedRequest`, one "
    "about another CA `unauthorized`, both with HTTP 200.")
_BODY = RequestBody(
    required=True, description="A DER OCSPRequest (`Content-Type: application/ocsp-request`).",
    content={REQUEST: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING,
                                                     format=OpenAPIFormat.BINARY))})


@dataclass
class _PostOperation(DocumentedOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _BODY


def _answer(der: bytes) -> Response[bytes]:
    return Response(der, media_type=RESPONSE, headers=_HEADERS)


class OcspController(Controller):
    path = "/ocsp"
    tags = ["ocsp"]

    @post("/", status_code=200, media_type=RESPONSE, operation_id="ocspPost",
          summary="OCSP request, POST", description=_DESCRIPTION,
          response_description="A DER OCSPResponse", operation_class=_PostOperation)
    async def by_post(self, request: Request[Any, Any, Any],
                      service: NamedDependency[CertsService]) -> Response[bytes]:
        with metrics.observe("ocsp"):
            return _answer(await ocsp_for(service).answer(await request.body()))

    @get_or_head("/{encoded:path}", media_type=RESPONSE, operation_id="ocspGet",
                 summary="OCSP request, GET", response_description="A DER OCSPResponse",
                 description="The URL-encoded base64 of the DER OCSPRequest as the path "
                             "(it may hold `/`). " + _DESCRIPTION,
                 operation_class=DocumentedOperation)
    async def by_get(self, encoded: str,
                     service: NamedDependency[CertsService]) -> Response[bytes]:
        with metrics.observe("ocsp"):
            try:
                der = decode_get_request(encoded.lstrip("/"))
            except MalformedOcspRequest:
                der = b""
            return _answer(await ocsp_for(service).answer(der))

    @get_or_head("/", media_type=RESPONSE, include_in_schema=False)
    async def empty_get(self) -> Response[bytes]:
        """``GET /ocsp`` (or ``/ocsp/``) carries no request: malformedRequest."""
        with metrics.observe("ocsp"):
            return _answer(MALFORMED_REQUEST)
