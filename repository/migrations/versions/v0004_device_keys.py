"""Device-held keys: certs.device_key marks a certificate issued from the device's own CSR
(SPEC 3), whose key the service never had; renewals certify the same public key again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certs") as batch:
        batch.add_column(sa.Column("device_key", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("certs") as batch:
        batch.drop_column("device_key")
