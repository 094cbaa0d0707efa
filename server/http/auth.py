"""Reading credentials from the Authorization header (never logged, never echoed)."""

from litestar import Request

from authority import errors as msg
from authority.errors import Unauthenticated
from authority.identity import KeyType


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Unauthenticated(msg.MISSING_TOKEN)
    return token.strip()


def thing_key(request: Request) -> tuple[KeyType, str]:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key_type: KeyType
    if scheme == "Thing":
        key_type = "internal"
    elif scheme == "External":
        key_type = "external"
    else:
        raise Unauthenticated(msg.INVALID_THING_KEY_TYPE)
    if not key.strip():
        raise Unauthenticated(msg.INVALID_THING_KEY_TYPE)
    return key_type, key.strip()
