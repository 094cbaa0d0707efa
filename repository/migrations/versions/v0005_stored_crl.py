"""One CRL for the whole service (SPEC 7): published_crl holds the newest signed CRL, so that
every worker and replica serves the same bytes for one number and never an older number.

One row (id 1), created with crl_number 0 (none signed yet); a process replaces it only with a
CRL of a higher number.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    table = op.create_table(
        "published_crl",
        sa.Column("id", sa.SmallInteger(), nullable=False, autoincrement=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        sa.Column("revocation_seq", sa.BigInteger(), nullable=False),
        sa.Column("this_update", ts),
        sa.Column("next_update", ts),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_published_crl"),
        sa.CheckConstraint("id = 1", name="ck_published_crl_single_row"),
    )
    op.bulk_insert(table, [{"id": 1, "crl_number": 0, "revocation_seq": 0, "entries": 0,
                            "der": b""}])

def downgrade() -> None:
    op.drop_table("published_crl")
