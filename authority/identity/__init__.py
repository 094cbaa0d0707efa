"""Identity: clients of Mainflux's things and auth gRPC services, and a static stand-in provider.

The HTTP layer uses `ThingsClient` / `AuthClient` and maps the errors of
`authority.identity.errors` to responses. The provider (`devtools.identity.provider`, not imported
here) is a demo/test server, not for multi-user production.
"""

from .client import Action, AuthClient, KeyType, ThingsClient, UserIdentity
from .errors import (
    AuthenticationFailed,
    AuthorizationFailed,
    IdentityError,
    IdentityUnavailable,
    InvalidIdentityRequest,
)

__all__ = [
    "Action",
    "AuthClient",
    "AuthenticationFailed",
    "AuthorizationFailed",
    "IdentityError",
    "IdentityUnavailable",
    "InvalidIdentityRequest",
    "KeyType",
    "ThingsClient",
    "UserIdentity",
]
