"""Python SDK of the certs service: sync and async clients, typed results and errors, a device
enrollment helper. The command line is `certs-client` (certs_sdk.cli)."""

from certs_sdk.aio import AsyncCertsClient
from certs_sdk.client import CertsClient
from certs_sdk.device import CsrNotSupported, Device
from certs_sdk.errors import (
    BadRequest,
    CertsError,
    ConnectionFailed,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnexpectedResponse,
    UnsupportedMediaType,
)
from certs_sdk.models import (
    Certificate,
    CertificatePage,
    Health,
    Revocation,
    SerialEntry,
    SerialPage,
)
from certs_sdk.retry import RetryEvent, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AsyncCertsClient",
    "BadRequest",
    "Certificate",
    "CertificatePage",
    "CertsClient",
    "CertsError",
    "ConnectionFailed",
    "CsrNotSupported",
    "Device",
    "Forbidden",
    "Health",
    "NotFound",
    "RetryEvent",
    "RetryPolicy",
    "Revocation",
    "SerialEntry",
    "SerialPage",
    "ServiceUnavailable",
    "Timeout",
    "Unauthorized",
    "UnexpectedResponse",
    "UnsupportedMediaType",
]
