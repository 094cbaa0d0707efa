"""What went wrong, in the caller's terms; the HTTP layer turns each into a status and message."""


class ServiceError(Exception):
    """Base of the use-case errors; ``message`` is the exact text the SPEC names."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status = 400


class Unauthenticated(ServiceError):
    status = 401


class Forbidden(ServiceError):
    status = 403


class NotFound(ServiceError):
    status = 404


class UnsupportedContentType(ServiceError):
    status = 415


class Unavailable(ServiceError):
    status = 503


MALFORMED = "malformed entity specification"
MISSING_THING_ID = "missing thing id"
MISSING_CERT_DATA = "missing certificate data"
UNSUPPORTED_KEY_TYPE = "unsupported key type"
INVALID_KEY_BITS = "invalid key bits"
INVALID_TTL = "invalid ttl"
INVALID_CSR = "invalid csr"
INVALID_QUERY = "invalid query parameters"
INVALID_LIMIT = "invalid limit size"
NOT_ELIGIBLE = "certificate not eligible for renewal yet"
NOT_RENEWABLE = "certificate not renewable: the CA certificate expires first"
MISSING_TOKEN = "missing or invalid bearer user token"
INVALID_THING_KEY_TYPE = "invalid thing key type"
AUTHENTICATION_FAILED = "failed to perform authentication over the entity"
AUTHORIZATION_FAILED = "failed to perform authorization over the entity"
ALREADY_DOWNLOADED = "certificate already downloaded"
ENTITY_NOT_FOUND = "entity not found"
REVOKE_NOT_FOUND = "failed to revoke certificate"
SIGNING_UNAVAILABLE = "signing service unavailable"
DATABASE_UNAVAILABLE = "database unavailable"
