"""Paging a thing with many certificates (SPEC 8): the count of its active certificates is
read from a narrow index on thing_id alone (one deduplicated key per thing on PostgreSQL:
a few pages for 20,000 certificates, against hundreds in the (thing_id, expires_at, serial)
index that orders the page).

On PostgreSQL the stored CRL (tens of MB at a million revocations, mostly serials and a
signature) is kept uncompressed: compressing it on every store costs more time than it saves
space.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("revoked_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_certs_thing_count", "certs", ["thing_id"],
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE published_crl ALTER COLUMN der SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE published_crl ALTER COLUMN der SET STORAGE EXTENDED")
    op.drop_index("ix_certs_thing_count", table_name="certs")
