"""The OpenAPI description of each certs and things route (decorator arguments), kept apart
from the handlers so that these read as what they do."""

from typing import Any

from litestar.openapi import ResponseSpec

from authority import errors as msg
from server.http.bodies import HealthBody
from server.http.openapi import (
    BODY_ERRORS,
    BODY_TOO_LARGE,
    DEVICE,
    NO_STORE,
    SIGNING_UNAVAILABLE,
    UNAVAILABLE,
    USER,
    DocumentedOperation,
    IssuingJsonBodyOperation,
    IssuingOperation,
    errors,
    user_errors,
)

UNSUPPORTED = ["unsupported content type"]
TOO_LARGE = [BODY_TOO_LARGE]
_ISSUED = {"response_headers": NO_STORE, "response_description": "The new certificate and key"}

ISSUE: dict[str, Any] = {
    "operation_id": "issueCert", "summary": "Issue a certificate for a thing",
    "description": "Needs the `editor` role on the thing. The key is generated here unless the "
                   "body carries the device's `csr`.",
    "security": USER, "operation_class": IssuingJsonBodyOperation, **_ISSUED,
    "responses": user_errors(e400=BODY_ERRORS, e413=TOO_LARGE, e415=UNSUPPORTED,
                             e503=SIGNING_UNAVAILABLE),
}
VIEW: dict[str, Any] = {
    "operation_id": "viewCert", "summary": "View a certificate (never its private key)",
    "description": "Needs the `viewer` role on the certificate's thing.",
    "security": USER, "operation_class": DocumentedOperation,
    "responses": user_errors(e404=[msg.ENTITY_NOT_FOUND]),
}
RENEW: dict[str, Any] = {
    "operation_id": "renewCert", "summary": "Renew a certificate close to expiry",
    "description": "Allowed when the certificate expires within `MF_CERTS_RENEW_WINDOW` (720h) "
                   "or has expired: a new key and certificate with a fresh serial, the same key "
                   "type, size and lifetime; the old one is revoked in the same step.",
    "security": USER, "operation_class": IssuingOperation, **_ISSUED,
    "responses": user_errors(e400=[msg.MALFORMED, msg.NOT_ELIGIBLE, msg.NOT_RENEWABLE],
                             e404=[msg.ENTITY_NOT_FOUND], e503=SIGNING_UNAVAILABLE),
}
ROTATE: dict[str, Any] = {
    "operation_id": "rotateCert", "summary": "Replace a certificate now",
    "description": "Like renew, at any time, with the body's parameters; its `thing_id` must be "
                   "the certificate's.",
    "security": USER, "operation_class": IssuingJsonBodyOperation, **_ISSUED,
    "responses": user_errors(e400=BODY_ERRORS, e404=[msg.ENTITY_NOT_FOUND], e413=TOO_LARGE,
                             e415=UNSUPPORTED, e503=SIGNING_UNAVAILABLE),
}
REVOKE: dict[str, Any] = {
    "operation_id": "revokeCert", "summary": "Revoke a certificate",
    "description": "The certificate leaves the active set, its serial is in the CRL before the "
                   "answer is sent, and its stored key is destroyed.",
    "security": USER, "operation_class": DocumentedOperation,
    "responses": user_errors(e404=[msg.REVOKE_NOT_FOUND], e503=SIGNING_UNAVAILABLE),
}
DOWNLOAD: dict[str, Any] = {
    "operation_id": "downloadCert", "summary": "A device fetches its certificate and key, once",
    "description": "With the thing's key; the first call returns the key and marks the record "
                   "downloaded, every later one is 403 `certificate already downloaded`.",
    "security": DEVICE, "operation_class": DocumentedOperation, **_ISSUED,
    "responses": errors({
        400: [msg.MALFORMED],
        401: [msg.INVALID_THING_KEY_TYPE, msg.AUTHENTICATION_FAILED],
        403: [msg.AUTHORIZATION_FAILED, msg.ALREADY_DOWNLOADED],
        404: [msg.ENTITY_NOT_FOUND], 503: UNAVAILABLE}),
}
_LIST = {
    "security": USER, "operation_class": DocumentedOperation,
    "description": "The thing's active (not revoked) certificates, ordered by `expires_at` then "
                   "serial. Needs the `viewer` role on the thing.",
    "responses": user_errors(e400=[msg.MALFORMED, msg.INVALID_QUERY, msg.INVALID_LIMIT]),
}
LIST_SERIALS: dict[str, Any] = {
    "operation_id": "listSerials", "summary": "List a thing's certificate serials", **_LIST}
LIST_SERIALS_SVC: dict[str, Any] = {
    "operation_id": "listSerialsSvc",
    "summary": "List a thing's certificate serials (the Go SDK's path)", **_LIST}
LIST_CERTS: dict[str, Any] = {
    "operation_id": "listCerts", "summary": "List a thing's certificates", **_LIST}

HEALTH_MEDIA_TYPE = "application/health+json"
HEALTH: dict[str, Any] = {
    "operation_id": "health", "summary": "Health of the service and its dependencies",
    "tags": ["health"], "media_type": HEALTH_MEDIA_TYPE,
    "description": "200 while the next request could be served; 503 when the HSM or the "
                   "database is unusable. Anyone may call it.",
    "responses": {
        200: ResponseSpec(HealthBody, description="Usable (`pass` or `warn`)",
                          media_type=HEALTH_MEDIA_TYPE, generate_examples=False),
        503: ResponseSpec(HealthBody, description="Not usable (`fail`)",
                          media_type=HEALTH_MEDIA_TYPE, generate_examples=False),
    },
}
METRICS: dict[str, Any] = {
    "operation_id": "metrics", "summary": "Prometheus metrics", "tags": ["health"],
    "media_type": "text/plain", "response_description": "The text exposition format 0.0.4",
}
