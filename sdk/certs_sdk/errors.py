"""Typed errors: one class per status of SPEC section 3, each carrying the status and the
service's `{"error": ...}` message; transport failures are ServiceUnavailable too."""

from __future__ import annotations


class CertsError(Exception):
    """Base of every SDK error. `status` is the HTTP status (None when no response came),
    `message` the service's error message, `attempts` how many requests were sent."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.attempts = attempts

    def __str__(self) -> str:
        return f"{self.status} {self.message}" if self.status is not None else self.message


class BadRequest(CertsError):
    status: int | None = 400


class Unauthorized(CertsError):
    status: int | None = 401


class Forbidden(CertsError):
    status: int | None = 403


class NotFound(CertsError):
    status: int | None = 404


class UnsupportedMediaType(CertsError):
    status: int | None = 415


class ServiceUnavailable(CertsError):
    """503: the HSM, database or identity service is down (message names which)."""

    status: int | None = 503


class ConnectionFailed(ServiceUnavailable):
    """No connection to the service (refused, unresolvable, TLS failure): no status."""

    status = None


class Timeout(ServiceUnavailable):
    """The service did not answer within the client's timeout: no status."""

    status = None


class UnexpectedResponse(CertsError):
    """A status the SPEC does not give (such as 500) or a body that is not what it says."""


_BY_STATUS: dict[int, type[CertsError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, UnsupportedMediaType,
                ServiceUnavailable)
    if cls.status is not None
}


def error_for(status: int, message: str, *, attempts: int = 1) -> CertsError:
    """The typed error for an error response."""
    cls = _BY_STATUS.get(status, UnexpectedResponse)
    return cls(message, status=status, attempts=attempts)
