"""Alembic environment and revisions of the certificate store (run via repository.migrate)."""
