"""Bringing a database up to date: the schema, then the keys a Go deployment left in plaintext."""

from authority.settings import Settings
from authority.wiring import open_authority, open_store
from repository import migrate, plaintext_key_count


def migrate_and_seal(settings: Settings) -> int:
    """Migrate the schema to the newest version, then seal (in the HSM, in batches) every
    plaintext client key a database taken over from the Go service still holds; returns how
    many were sealed. Idempotent. The HSM is opened only when there is a key to seal."""
    migrate(settings.db_url)
    if plaintext_key_count(settings.db_url) == 0:
        return 0
    authority = open_authority(settings)
    store = open_store(settings, authority, pool_size=1, max_overflow=0)
    try:
        return store.seal_legacy_keys()
    finally:
        store.engine.dispose()
        authority.connection.close()
