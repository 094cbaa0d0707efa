"""What the OpenAPI document says beyond the handlers' signatures: who may call a route, which
`{"error"}` messages each status carries, the issue/rotate body, and operation ids.

The JSON bodies of issue and rotate are parsed by the service (SPEC messages, unknown fields
ignored), not by Litestar, so their schema is attached here to the generated operation."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from litestar.datastructures import ResponseHeader
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.params import PathParameter
from litestar.types import Method
from litestar.types.internal_types import PathParameterDefinition

from authority import errors as msg
from authority.requests import (
    MAX_LIMIT,
    MAX_OFFSET,
    MAX_SERIAL_FILTER,
    MAX_TTL_HOURS,
    MAX_TTL_TEXT,
)
from server.http.bodies import ErrorBody

THINGS_UNAVAILABLE = "things service unavailable"
BODY_TOO_LARGE = "request entity too large"

SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "Bearer": SecurityScheme(
        type="http", scheme="bearer",
        description="A Mainflux user token: `Authorization: Bearer <token>`. The things service "
                    "decides whether the user may view or edit the thing."),
    "ThingKey": SecurityScheme(
        type="apiKey", name="Authorization", security_scheme_in="header",
        description="A device's internal thing key: `Authorization: Thing <key>`."),
    "ExternalKey": SecurityScheme(
        type="apiKey", name="Authorization", security_scheme_in="header",
        description="A device's external thing key: `Authorization: External <key>`."),
}
USER: list[SecurityRequirement] = [{"Bearer": []}]
DEVICE: list[SecurityRequirement] = [{"ThingKey": []}, {"ExternalKey": []}]

_DESCRIPTIONS = {
    400: "The request is invalid",
    401: "No usable credentials, or the identity service rejected them",
    403: "The caller may not do this",
    404: "No such certificate",
    413: "The body is larger than the service reads (64 KiB)",
    415: "The body is not declared as `application/json`",
    503: "A dependency (HSM, database, things service) is unavailable or timed out",
}
BODY_ERRORS = [msg.MALFORMED, msg.MISSING_THING_ID, msg.MISSING_CERT_DATA,
               msg.UNSUPPORTED_KEY_TYPE, msg.INVALID_KEY_BITS, msg.INVALID_TTL, msg.INVALID_CSR]
USER_401 = [msg.MISSING_TOKEN, msg.AUTHENTICATION_FAILED]
USER_403 = [msg.AUTHORIZATION_FAILED]
UNAVAILABLE = [THINGS_UNAVAILABLE, msg.DATABASE_UNAVAILABLE]
SIGNING_UNAVAILABLE = [*UNAVAILABLE, msg.SIGNING_UNAVAILABLE]
CRL_UNAVAILABLE = [msg.DATABASE_UNAVAILABLE, msg.SIGNING_UNAVAILABLE]


def errors(by_status: dict[int, Sequence[str]]) -> dict[int, ResponseSpec]:
    """The `{"error"}` response of each status with its exact messages as examples."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, generate_examples=False,
            description=f"{_DESCRIPTIONS[status]}. `error` is one of: "
                        + ", ".join(f"`{message}`" for message in messages),
            examples=[Example(summary=message, value={"error": message}) for message in messages],
        )
        for status, messages in by_status.items()
    }


def user_errors(**extra: Sequence[str]) -> dict[int, ResponseSpec]:
    """A user route's errors: the identity ones plus `extra` ("e400", "e404", ...)."""
    by_status: dict[int, Sequence[str]] = {
        400: [msg.MALFORMED], 401: USER_401, 403: USER_403, 503: UNAVAILABLE}
    for key, messages in extra.items():
        by_status[int(key[1:])] = messages
    return errors(dict(sorted(by_status.items())))


def operation_id(name: str, **by_prefix: str) -> Callable[..., str]:
    """`name` for GET and the other methods, `<name>Head` for HEAD; a route whose path starts
    with a key of `by_prefix` gets that id instead (one handler on two paths)."""

    def create(handler: HTTPRouteHandler, method: Method | HttpMethod,
               path: list[str | PathParameterDefinition]) -> str:
        first = path[0] if path and isinstance(path[0], str) else ""
        chosen = by_prefix.get(first, name)
        return f"{chosen}Head" if method == HttpMethod.HEAD else chosen

    return create


def integer_query(description: str, minimum: int, maximum: int, default: int
                  ) -> dict[str, Any]:
    """`schema_extra` of a query parameter that the service parses itself (a non-integer is
    its 400 `invalid query parameters`, not Litestar's), documented as the integer it is."""
    return {"one_of": None, "type": OpenAPIType.INTEGER, "minimum": minimum, "maximum": maximum,
            "default": default, "description": description}


OFFSET = integer_query("How many certificates to skip.", 0, MAX_OFFSET, 0)
LIMIT = integer_query(f"Page size; above {MAX_LIMIT} is refused (`invalid limit size`).",
                      1, MAX_LIMIT, 10)

_TTL_PATTERN = r"^\s*(\d+|[+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d))+)\s*$"
ISSUE_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["thing_id"],
    additional_properties=True,
    description="What to issue. Only `thing_id` is required; unknown fields are ignored.",
    properties={
        "thing_id": Schema(type=OpenAPIType.STRING, min_length=1,
                           description="The thing the certificate is for (its subject CN).",
                           examples=["7a1a1000-0000-4000-8000-0000000000a1"]),
        "key_type": Schema(
            type=OpenAPIType.STRING, enum=["rsa", "ec", "ecdsa"], default="rsa",
            description="`ecdsa` is a synonym of `ec`; any letter case is accepted."),
        "key_bits": Schema(
            type=OpenAPIType.INTEGER, enum=[0, 2048, 3072, 4096, 224, 256, 384, 521],
            description="RSA: 2048, 3072 or 4096 (default `MF_CERTS_SIGN_RSA_BITS`, 2048). EC: "
                        "256, 384 or 521 (P-256, P-384, P-521; 224 accepted for compatibility),"
                        " default 256. 0 or absent: the default. A size that does not fit "
                        "`key_type` is `invalid key bits`."),
        "ttl": Schema(
            one_of=[Schema(type=OpenAPIType.STRING, pattern=_TTL_PATTERN, max_length=MAX_TTL_TEXT,
                           description="A Go duration (`8760h`, `30m`, `1h30m`; also `d` for "
                                       "days) or a whole number of hours as a string."),
                    Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_TTL_HOURS,
                           description="Hours.")],
            description="Lifetime; default `MF_CERTS_SIGN_HOURS_VALID` (2048h). It must be "
                        "positive and end before the CA certificate does (`invalid ttl`).",
            examples=["8760h", 720]),
        "csr": Schema(
            type=OpenAPIType.STRING, pattern="-----BEGIN (NEW )?CERTIFICATE REQUEST-----",
            description="A PEM PKCS#10 request made by the device with its own key (RSA "
                        "2048/3072/4096, EC P-256/P-384/P-521). The response's `private_key` "
                        "is then `\"\"`. Its subject and extensions are ignored."),
    },
)
ISSUE_BODY = RequestBody(
    required=True,
    description="`Content-Type: application/json` (parameters such as charset allowed).",
    content={"application/json": OpenAPIMediaType(schema=ISSUE_SCHEMA, examples={
        "defaults": Example(summary="RSA 2048, default lifetime",
                            value={"thing_id": "7a1a1000-0000-4000-8000-0000000000a1"}),
        "ec": Example(summary="EC P-384 for a year",
                      value={"thing_id": "7a1a1000-0000-4000-8000-0000000000a1",
                             "key_type": "ec", "key_bits": 384, "ttl": "8760h"}),
    })},
)


@dataclass
class DocumentedOperation(Operation):
    """An operation as Litestar builds it, less its default 400 (Litestar's validation body,
    which this service never sends); HEAD answers carry no body."""

    def __post_init__(self) -> None:
        default = (self.responses or {}).get("400")
        content = getattr(default, "content", None) or {}
        if any(isinstance(media.schema, Schema) for media in content.values()):
            del self.responses["400"]  # type: ignore[union-attr]
        if self.operation_id and self.operation_id.endswith("Head"):
            for response in (self.responses or {}).values():
                if hasattr(response, "content"):
                    response.content = None


@dataclass
class JsonBodyOperation(DocumentedOperation):
    """An operation whose JSON body the service reads itself (issue, rotate)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = ISSUE_BODY


SERIAL_LINKS = {
    name: Link(operation_id=name, parameters={"serial": "$response.body#/serial"},
               description=f"`{name}` of the new certificate.")
    for name in ("viewCert", "renewCert", "rotateCert", "revokeCert", "downloadCert")
}


def _link_new_certificate(operation: Operation) -> None:
    created = (operation.responses or {}).get("201")
    if created is not None and hasattr(created, "links"):
        created.links = dict(SERIAL_LINKS)


@dataclass
class IssuingOperation(DocumentedOperation):
    """Renew: its answer's serial leads to the certificate's other operations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _link_new_certificate(self)


@dataclass
class IssuingJsonBodyOperation(JsonBodyOperation):
    """Issue and rotate: a JSON body, and the new serial links to the other operations."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _link_new_certificate(self)


NO_STORE = [ResponseHeader(
    name="Cache-Control", value="no-store",
    description="`no-store`: the body carries a private key; no cache may keep it.")]
SerialPath = Annotated[str, PathParameter(
    description="The certificate's serial: hex in any case, leading zeros and `:` separators "
                "ignored (`0D:28:A6...` finds `d28a6...`); an imported Go serial is decimal.")]
ThingPath = Annotated[str, PathParameter(description="The thing's id.")]


def string_param(description: str, **extra: Any) -> dict[str, Any]:
    """`schema_extra` of an optional string parameter: a string when present (not "or null")."""
    return {"one_of": None, "type": OpenAPIType.STRING, "description": description, **extra}


SERIAL = string_param("Only serials containing this text.", max_length=MAX_SERIAL_FILTER)
# An empty value is no bound, as if the parameter were absent.
_MOMENT = [Schema(format=OpenAPIFormat.DATE_TIME), Schema(max_length=0)]
FROM = string_param("Only certificates expiring at or after this RFC 3339 time (with zone).",
                    any_of=_MOMENT)
TO = string_param("Only certificates expiring at or before this RFC 3339 time (with zone).",
                  any_of=_MOMENT)
