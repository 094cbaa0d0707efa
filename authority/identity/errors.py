"""Typed errors of the identity clients.

The HTTP layer maps them to responses (SPEC sections 3 and 4):

| error                    | HTTP |
|--------------------------|------|
| `AuthenticationFailed`   | 401  |
| `AuthorizationFailed`    | 403  |
| `InvalidIdentityRequest` | 400  |
| `IdentityUnavailable`    | 503  |

Messages never contain a token, a thing key or the peer's status details (which could echo
either); `str(IdentityUnavailable)` is exactly "things service unavailable" or
"auth service unavailable", suitable for a 503 body.
"""

from __future__ import annotations

from typing import Literal

import grpc

Service = Literal["things", "auth"]


class IdentityError(Exception):
    """Base class of every error raised by the identity clients.

    `service` is "things" or "auth"; `method` the RPC name (e.g. "CanUserAccessThing");
    `code` the gRPC status of the failed call, or None when the client itself gave up.
    """

    def __init__(
        self,
        message: str,
        *,
        service: Service,
        method: str,
        code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.service: Service = service
        self.method = method
        self.code = code

    @property
    def code_name(self) -> str:
        """The gRPC status name ("UNAVAILABLE", ...) or "NONE"."""
        return self.code.name if self.code is not None else "NONE"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, service={self.service!r}, "
            f"method={self.method!r}, code={self.code_name})"
        )


class AuthenticationFailed(IdentityError):
    """The token or thing key was rejected (HTTP 401)."""


class AuthorizationFailed(IdentityError):
    """The user may not act on the thing, or the thing does not exist (HTTP 403)."""


class InvalidIdentityRequest(IdentityError):
    """The identity service refused the request as malformed (HTTP 400)."""


class IdentityUnavailable(IdentityError):
    """The service is down, timed out or misbehaved (HTTP 503)."""
