"""EST (RFC 7030, SPEC 12) under ``/.well-known/est``: payloads are base64 of DER, errors are
``text/plain``.

The re-enroll certificate comes from the server's own TLS handshake when the server hands it
to the application (the ASGI TLS extension, ``scope["extensions"]["tls"]``; uvicorn 0.54 does
not), or from the header ``MF_CERTS_CLIENT_CERT_HEADER`` set by a TLS-terminating proxy
(URL-encoded PEM, nginx's ``$ssl_client_escaped_cert``), believed only when the connection
comes from ``MF_CERTS_TRUSTED_PROXIES``.
"""

import base64
import binascii
import ipaddress
import logging
from typing import Any
from urllib.parse import unquote

from asn1crypto import pem
from litestar import Controller, HttpMethod, Request, Response, post, route
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec

from authority import enrollment
from authority.errors import Forbidden, ServiceError, Unauthenticated
from authority.identity import KeyType
from authority.service import CertsService
from authority.settings import Settings
from server import metrics
from server.http.observability import note_reason
from server.http.openapi import DEVICE, DocumentedOperation, operation_id
from server.http.routes import get_or_head

PKCS7 = "application/pkcs7-mime"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
TEXT = "text/plain"
CHALLENGE = {"WWW-Authenticate": 'Basic realm="certs"'}
MISSING_CREDENTIALS = "missing or invalid credentials"
MISSING_CERTIFICATE = "client certificate required"
log = logging.getLogger("certs.http")

Service = NamedDependency[CertsService]
_TEXT_ERRORS = {
    400: "Not a base64 PKCS#10 request, its signature does not verify, or its key is outside "
         "the policy",
    401: "Credentials missing or rejected (with `WWW-Authenticate: Basic realm=\"certs\"`)",
    403: "The username names another thing, or the presented certificate is revoked, expired "
         "or not this CA's",
    503: "A dependency (HSM, database, things service) is unavailable",
}


def _responses(*statuses: int) -> dict[int, ResponseSpec]:
    return {status: ResponseSpec(None, description=_TEXT_ERRORS[status], media_type=TEXT)
            for status in statuses}


def _text(status: int, message: str) -> Response[bytes]:
    note_reason(message)
    headers = CHALLENGE if status == 401 else {}
    return Response(message.encode(), status_code=status, media_type=TEXT, headers=headers)


def _service_error(_: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    return _text(exc.status, exc.message)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _text(exc.status_code, (exc.detail or "request failed").lower())


def _internal_error(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.error("unhandled %s", type(exc).__name__)
    return _text(500, "internal server error")


def _base64(der: bytes, media_type: str = CERTS_ONLY) -> Response[bytes]:
    """An EST answer: base64 of DER in 76-column lines (RFC 7030 section 4, RFC 8951)."""
    return Response(base64.encodebytes(der), media_type=media_type,
                    headers={"Content-Transfer-Encoding": "base64"})


_KEY_SCHEMES: dict[str, KeyType] = {"Thing": "internal", "External": "external"}


def credentials(request: Request[Any, Any, Any]) -> tuple[KeyType, str, str]:
    """(key type, thing key, username) from ``Basic`` (the key is the password), ``Thing <key>``
    or ``External <key>``; Unauthenticated otherwise. Never logged."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise Unauthenticated(MISSING_CREDENTIALS) from None
        username, colon, password = decoded.partition(":")
        if colon and password:
            return "internal", password, username
    elif scheme in _KEY_SCHEMES and value.strip():
        return _KEY_SCHEMES[scheme], value.strip(), ""
    raise Unauthenticated(MISSING_CREDENTIALS)


def _trusted(request: Request[Any, Any, Any], settings: Settings) -> bool:
    if not settings.trusted_proxies or request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.trusted_proxies)


def presented_certificate(request: Request[Any, Any, Any], settings: Settings) -> bytes | None:
    """The client certificate (DER) of this request, None when there is none to believe."""
    extensions: dict[str, Any] = request.scope.get("extensions") or {}
    chain = (extensions.get("tls") or {}).get("client_cert_chain") or ()
    if chain:
        return _der(str(next(iter(chain))))
    if not _trusted(request, settings):
        return None
    values = request.headers.getall(settings.client_cert_header, [])
    if len(values) != 1 or not values[0].strip():
        return None
    return _der(unquote(values[0]))


def _der(text: str) -> bytes:
    try:
        kind, _, der = pem.unarmor(text.strip().encode())
    except ValueError:
        raise Forbidden(enrollment.CERTIFICATE_REFUSED) from None
    if kind != "CERTIFICATE":
        raise Forbidden(enrollment.CERTIFICATE_REFUSED)
    return der


class EstController(Controller):
    path = "/.well-known/est"
    tags = ["est"]
    exception_handlers = {ServiceError: _service_error, HTTPException: _http_error,
                          Exception: _internal_error}

    @route("/cacerts", http_method=[HttpMethod.GET, HttpMethod.HEAD], media_type=PKCS7,
           operation_id=operation_id("estCaCerts"), operation_class=DocumentedOperation,
           summary="The CA chain, certs-only CMS (RFC 7030 4.1)",
           response_description="base64 of a certs-only SignedData with the CA chain",
           responses=_responses(503))
    async def cacerts(self, service: Service) -> Response[bytes]:
        with metrics.observe("est_cacerts"):
            return _base64(enrollment.ca_certs(service), PKCS7)

    @post("/simpleenroll", status_code=200, media_type=CERTS_ONLY,
          operation_id="estSimpleEnroll", operation_class=DocumentedOperation, security=DEVICE,
          summary="Enroll with the thing key (RFC 7030 4.2)",
          description="HTTP Basic with the thing key as password (a non-empty username must "
                      "be the thing's id), or `Authorization: Thing <key>`. The body is a "
                      "base64 PKCS#10 (`application/pkcs10`); the certificate gets "
                      "`CN=<thing_id>` and the lifetime `MF_CERTS_SIGN_HOURS_VALID`.",
          response_description="base64 of a certs-only SignedData with the new certificate",
          responses=_responses(400, 401, 403, 503))
    async def simpleenroll(self, request: Request[Any, Any, Any],
                           service: Service) -> Response[bytes]:
        with metrics.observe("est_enroll"):
            key_type, key, username = credentials(request)
            enrolled = await enrollment.enroll(service, key_type, key, username,
                                               await request.body())
            return _base64(enrolled.pkcs7)

    @post("/simplereenroll", status_code=200, media_type=CERTS_ONLY,
          operation_id="estSimpleReenroll", operation_class=DocumentedOperation,
          summary="Re-enroll with the current certificate (RFC 7030 4.2.2)",
          description="The client certificate (TLS, or the trusted proxy's header) must be "
                      "this CA's, active and not expired; the new certificate is the same "
                      "thing's and the presented one is revoked (superseded) in the same "
                      "transaction.",
          response_description="base64 of a certs-only SignedData with the new certificate",
          responses=_responses(400, 401, 403, 503))
    async def simplereenroll(self, request: Request[Any, Any, Any],
                             service: Service) -> Response[bytes]:
        with metrics.observe("est_reenroll"):
            presented = presented_certificate(request, service.settings)
            if presented is None:
                raise Unauthenticated(MISSING_CERTIFICATE)
            enrolled = await enrollment.reenroll(service, presented, await request.body())
            return _base64(enrolled.pkcs7)

    @get_or_head("/csrattrs", status_code=204, operation_id="estCsrAttrs",
         operation_class=DocumentedOperation,
         summary="CSR attributes (RFC 7030 4.5): none are required")
    async def csrattrs(self) -> None:
        with metrics.observe("est_csrattrs"):
            return None

