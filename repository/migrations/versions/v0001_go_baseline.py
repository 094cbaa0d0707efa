"""The Go certs service's schema, created only where it does not exist yet.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

What the Go service (MainfluxLabs/mainflux, certs/postgres/init.go, migrations certs_1 and
certs_2, plus the ``downloaded`` column its certs/postgres/certs.go reads and writes) defines:

    certs(thing_id UUID NOT NULL, serial VARCHAR(64) NOT NULL UNIQUE, expires_at TIMESTAMPTZ
          NOT NULL, client_cert TEXT NOT NULL, client_key TEXT NOT NULL (plaintext PEM key),
          issuing_ca TEXT NOT NULL, ca_chain TEXT[], private_key_type TEXT NOT NULL,
          created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), key_bits INTEGER NOT NULL DEFAULT 0,
          downloaded BOOLEAN, PRIMARY KEY (thing_id, serial));
          indexes idx_certs_serial(serial), idx_certs_expires_at(expires_at)
    revoked_certs(thing_id UUID NOT NULL, serial VARCHAR(64) NOT NULL UNIQUE,
                  revoked_at TIMESTAMPTZ NOT NULL DEFAULT NOW());
                  indexes idx_revoked_certs_thing_id, idx_revoked_certs_revoked_at

Go revokes by inserting into revoked_certs and deleting from certs; serials are decimal
(big.Int.String()). Older Mainflux releases had certs(thing_id, owner_id, expire, serial) with
the certificate in Vault; that layout is not imported. A database the Go service created is
stamped at this revision implicitly: every step here is skipped when the table exists, except
adding key_bits/downloaded if the Go database predates them.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    pg = bind.dialect.name == "postgresql"
    uuid_type: sa.types.TypeEngine[Any] = postgresql.UUID(as_uuid=False) if pg else sa.Text()
    chain_type: sa.types.TypeEngine[Any] = postgresql.ARRAY(sa.Text()) if pg else sa.Text()

    if not inspector.has_table("certs"):
        op.create_table(
            "certs",
            sa.Column("thing_id", uuid_type, nullable=False),
            sa.Column("serial", sa.String(64), nullable=False),
            sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("client_cert", sa.Text(), nullable=False),
            sa.Column("client_key", sa.Text(), nullable=False),
            sa.Column("issuing_ca", sa.Text(), nullable=False),
            sa.Column("ca_chain", chain_type),
            sa.Column("private_key_type", sa.Text(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                      server_default=sa.func.now()),
            sa.Column("key_bits", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("downloaded", sa.Boolean(), nullable=False, server_default=sa.false()),
            sa.PrimaryKeyConstraint("thing_id", "serial", name="certs_pkey"),
            sa.UniqueConstraint("serial", name="certs_serial_key"),
        )
        op.create_index("idx_certs_serial", "certs", ["serial"])
        op.create_index("idx_certs_expires_at", "certs", ["expires_at"])
    else:
        columns = {column["name"] for column in inspector.get_columns("certs")}
        if "key_bits" not in columns:
            op.add_column("certs", sa.Column("key_bits", sa.Integer(), nullable=False,
                                             server_default="0"))
        if "downloaded" not in columns:
            op.add_column("certs", sa.Column("downloaded", sa.Boolean(), nullable=False,
                                             server_default=sa.false()))

    if not inspector.has_table("revoked_certs"):
        op.create_table(
            "revoked_certs",
            sa.Column("thing_id", uuid_type, nullable=False),
            sa.Column("serial", sa.String(64), nullable=False),
            sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False,
                      server_default=sa.func.now()),
            sa.UniqueConstraint("serial", name="revoked_certs_serial_key"),
        )
        op.create_index("idx_revoked_certs_thing_id", "revoked_certs", ["thing_id"])
        op.create_index("idx_revoked_certs_revoked_at", "revoked_certs", ["revoked_at"])


def downgrade() -> None:
    op.drop_table("revoked_certs")
    op.drop_table("certs")
