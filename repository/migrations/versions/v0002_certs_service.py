"""This service's schema: sealed keys, revocation details, CRL state, leases and the outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-01

certs and revoked_certs are rebuilt (new table, copy, drop, rename) the same way on PostgreSQL
and SQLite; rows imported from Go keep their meaning:
- certs: serial becomes the primary key, thing_id TEXT (was UUID), client_key becomes the
  nullable *legacy plaintext* key (Store.seal_legacy_keys moves it into private_key_enc),
  issuing_ca nullable; added owner_id, not_before, private_key_enc, serial_base (10 for Go's
  decimal serials, 16 for hex), revoked_at, revocation_reason, lease_owner, lease_expires_at.
  A revoked certificate stays in certs with revoked_at set.
- revoked_certs: added seq (commit order, primary key), reason, expires_at (NULL for Go
  rows: Go deleted the certificate, so they stay on the CRL), serial_base.
- crl_state: one row with the last CRL number and the last revocation seq.
- outbox: events waiting to be published, payload sealed.
Downgrading restores the Go layout; keys sealed by this service are lost on the way (the
migration cannot open them), so client_key becomes ''.
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("revoked_at IS NULL")


def _pg() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _decimal_base(column: str) -> str:
    """SQL for the base of a serial copied from Go: 10 for up to 39 digits, otherwise 16."""
    if _pg():
        return f"CASE WHEN {column} ~ '^[0-9]{{1,39}}$' THEN 10 ELSE 16 END"
    return (f"CASE WHEN length({column}) <= 39 AND {column} NOT GLOB '*[^0-9]*' "
            f"THEN 10 ELSE 16 END")


def upgrade() -> None:
    pg = _pg()
    ts = sa.DateTime(timezone=True)
    chain_type: sa.types.TypeEngine[Any] = postgresql.ARRAY(sa.Text()) if pg else sa.Text()

    op.create_table(
        "certs_v2",
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("thing_id", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Text()),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("not_before", ts),
        sa.Column("client_cert", sa.Text(), nullable=False),
        sa.Column("client_key", sa.Text()),
        sa.Column("private_key_enc", sa.LargeBinary()),
        sa.Column("issuing_ca", sa.Text()),
        sa.Column("ca_chain", chain_type),
        sa.Column("private_key_type", sa.Text(), nullable=False),
        sa.Column("key_bits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("downloaded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("serial_base", sa.SmallInteger(), nullable=False, server_default="16"),
        sa.Column("revoked_at", ts),
        sa.Column("revocation_reason", sa.Text()),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires_at", ts),
        sa.PrimaryKeyConstraint("serial", name="pk_certs"),
    )
    op.execute(
        "INSERT INTO certs_v2 (serial, thing_id, expires_at, client_cert, client_key,"
        " issuing_ca, ca_chain, private_key_type, key_bits, downloaded, created_at, serial_base)"
        " SELECT lower(serial), CAST(thing_id AS TEXT), expires_at, client_cert,"
        " NULLIF(client_key, ''), NULLIF(issuing_ca, ''), ca_chain, private_key_type, key_bits,"
        f" COALESCE(downloaded, FALSE), created_at, {_decimal_base('serial')} FROM certs"
    )
    op.drop_table("certs")
    op.rename_table("certs_v2", "certs")
    op.create_index("ix_certs_thing_active", "certs", ["thing_id", "expires_at", "serial"],
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)
    op.create_index("ix_certs_expiring_active", "certs", ["expires_at", "serial"],
                    postgresql_where=_ACTIVE, sqlite_where=_ACTIVE)

    op.create_table(
        "revoked_certs_v2",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("thing_id", sa.Text(), nullable=False),
        sa.Column("revoked_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("reason", sa.Text()),
        sa.Column("expires_at", ts),
        sa.Column("serial_base", sa.SmallInteger(), nullable=False, server_default="16"),
        sa.PrimaryKeyConstraint("seq", name="pk_revoked_certs"),
        sa.UniqueConstraint("serial", name="uq_revoked_certs_serial"),
    )
    op.execute(
        "INSERT INTO revoked_certs_v2 (seq, serial, thing_id, revoked_at, serial_base)"
        " SELECT ROW_NUMBER() OVER (ORDER BY revoked_at, serial), lower(serial),"
        f" CAST(thing_id AS TEXT), revoked_at, {_decimal_base('serial')} FROM revoked_certs"
    )
    op.drop_table("revoked_certs")
    op.rename_table("revoked_certs_v2", "revoked_certs")
    op.create_index("ix_revoked_certs_thing_id", "revoked_certs", ["thing_id"])
    op.create_index("ix_revoked_certs_revoked_at", "revoked_certs", ["revoked_at"])

    op.create_table(
        "crl_state",
        sa.Column("id", sa.SmallInteger(), nullable=False, autoincrement=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("revocation_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", ts, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_crl_state"),
        sa.CheckConstraint("id = 1", name="ck_crl_state_single_row"),
    )
    op.execute(
        "INSERT INTO crl_state (id, crl_number, revocation_seq)"
        " SELECT 1, 0, COALESCE(MAX(seq), 0) FROM revoked_certs"
    )

    id_column = (
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False)
        if pg else sa.Column("id", sa.Integer(), nullable=False, autoincrement=True)
    )
    op.create_table(
        "outbox",
        id_column,
        sa.Column("event_key", sa.String(32), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("payload_enc", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_expires_at", ts),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_key", name="uq_outbox_event_key"),
    )


def downgrade() -> None:
    pg = _pg()
    ts = sa.DateTime(timezone=True)
    uuid_type: sa.types.TypeEngine[Any] = postgresql.UUID(as_uuid=False) if pg else sa.Text()
    chain_type: sa.types.TypeEngine[Any] = postgresql.ARRAY(sa.Text()) if pg else sa.Text()
    thing = "CAST(thing_id AS UUID)" if pg else "thing_id"

    op.drop_table("outbox")
    op.drop_table("crl_state")

    op.create_table(
        "certs_go",
        sa.Column("thing_id", uuid_type, nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("client_cert", sa.Text(), nullable=False),
        sa.Column("client_key", sa.Text(), nullable=False),
        sa.Column("issuing_ca", sa.Text(), nullable=False),
        sa.Column("ca_chain", chain_type),
        sa.Column("private_key_type", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False, server_default=sa.func.now()),
        sa.Column("key_bits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("downloaded", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("thing_id", "serial", name="certs_pkey"),
        sa.UniqueConstraint("serial", name="certs_serial_key"),
    )
    op.execute(
        "INSERT INTO certs_go (thing_id, serial, expires_at, client_cert, client_key, issuing_ca,"
        " ca_chain, private_key_type, created_at, key_bits, downloaded)"
        f" SELECT {thing}, serial, expires_at, client_cert, COALESCE(client_key, ''),"
        " COALESCE(issuing_ca, ''), ca_chain, private_key_type, created_at, key_bits, downloaded"
        " FROM certs WHERE revoked_at IS NULL"
    )
    op.drop_table("certs")
    op.rename_table("certs_go", "certs")
    op.create_index("idx_certs_serial", "certs", ["serial"])
    op.create_index("idx_certs_expires_at", "certs", ["expires_at"])

    op.create_table(
        "revoked_certs_go",
        sa.Column("thing_id", uuid_type, nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("revoked_at", ts, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("serial", name="revoked_certs_serial_key"),
    )
    op.execute(
        "INSERT INTO revoked_certs_go (thing_id, serial, revoked_at)"
        f" SELECT {thing}, serial, revoked_at FROM revoked_certs"
    )
    op.drop_table("revoked_certs")
    op.rename_table("revoked_certs_go", "revoked_certs")
    op.create_index("idx_revoked_certs_thing_id", "revoked_certs", ["thing_id"])
    op.create_index("idx_revoked_certs_revoked_at", "revoked_certs", ["revoked_at"])
