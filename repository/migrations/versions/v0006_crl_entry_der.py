"""Each revocation keeps its encoded CRL entry (the DER of its revokedCertificates element), so
that a process builds its first CRL by concatenating stored bytes instead of encoding every
revocation again (seconds at a million revocations).

The column is written with the revocation by the domain layer, which owns the encoding; rows
revoked before this migration (or imported from the Go service) have NULL and are encoded and
filled in by the first CRL build that reads them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("revoked_certs", sa.Column("crl_entry", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("revoked_certs") as batch:
        batch.drop_column("crl_entry")
