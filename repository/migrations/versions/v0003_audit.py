"""The audit trail: audit_log (hash-chained records) and audit_chain (its head row).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

audit_log.seq numbers the records 1, 2, ...; each row holds the SHA-256 of the previous row
(``prev_hash``; 64 zeros for the first) and its own (``hash``, over prev_hash and the row's
canonical content, see repository.audit). audit_chain holds one row with the last seq and hash:
writers lock it to append, and a removed last record is noticed against it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("at", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("email", sa.Text()),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("thing_id", sa.Text(), nullable=False),
        sa.Column("issued", sa.Text(), nullable=False),
        sa.Column("revoked", sa.Text(), nullable=False),
        sa.Column("downloaded", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("client", sa.Text()),
        sa.Column("request_id", sa.Text()),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_thing_id", "audit_log", ["thing_id", "seq"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.SmallInteger(), nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain"),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_single_row"),
    )
    op.execute(f"INSERT INTO audit_chain (id, seq, hash) VALUES (1, 0, '{GENESIS}')")


def downgrade() -> None:
    op.drop_table("audit_chain")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_thing_id", table_name="audit_log")
    op.drop_table("audit_log")
