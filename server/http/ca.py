"""``GET /ca`` and ``/ca.pem``: the CA chain, PEM, issuing CA first; anyone may fetch it."""

from litestar import Controller, HttpMethod, Response, route
from litestar.di import NamedDependency

from authority.service import CertsService
from server.http.openapi import DocumentedOperation, operation_id

PEM = "application/x-pem-file"
_DESCRIPTION = ("The certificates a client needs to verify what this service issues: the "
                "issuing CA first, then the CAs above it up to the root.")


def chain_pem(service: CertsService) -> bytes:
    return "".join(block if block.endswith("\n") else block + "\n"
                   for block in service.authority.ca_chain).encode()


class CaController(Controller):
    tags = ["ca"]

    @route(["/ca", "/ca.pem"], http_method=[HttpMethod.GET, HttpMethod.HEAD], media_type=PEM,
           operation_id=operation_id("getCa", **{"ca.pem": "getCaPem"}),
           summary="The CA chain, PEM", description=_DESCRIPTION,
           response_description="PEM certificates, the issuing CA first",
           operation_class=DocumentedOperation)
    async def chain(self, service: NamedDependency[CertsService]) -> Response[bytes]:
        return Response(chain_pem(service), media_type=PEM)
