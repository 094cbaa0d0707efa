"""The certificate store: SQLAlchemy tables, Alembic migrations and the service's queries."""

from repository.engine import create_engine_for
from repository.errors import (
    AlreadyDownloaded,
    Conflict,
    NotFound,
    NotOwner,
    RepositoryError,
    Unavailable,
)
from repository.migrate import HEAD, current_revision, downgrade, migrate, plaintext_key_count
from repository.records import (
    Certificate,
    CertificatePage,
    CrlEntry,
    CrlState,
    NewCertificate,
    NewEvent,
    OutboxEvent,
    PageFilters,
    Replacement,
    Revocation,
    RevocationReason,
    SerialEntry,
    SerialPage,
)
from repository.sealer import KeySealer
from repository.store import Store

__all__ = [
    "HEAD",
    "AlreadyDownloaded",
    "Certificate",
    "CertificatePage",
    "Conflict",
    "CrlEntry",
    "CrlState",
    "KeySealer",
    "NewCertificate",
    "NewEvent",
    "NotFound",
    "NotOwner",
    "OutboxEvent",
    "PageFilters",
    "Replacement",
    "RepositoryError",
    "Revocation",
    "RevocationReason",
    "SerialEntry",
    "SerialPage",
    "Store",
    "Unavailable",
    "create_engine_for",
    "current_revision",
    "downgrade",
    "migrate",
    "plaintext_key_count",
]
