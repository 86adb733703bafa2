"""depositor_usage: each depositor's bytes of current documents, kept by triggers on
documents, so the quota check reads one row instead of summing them

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 15:00:00.000000

The triggers (``qprserver.db.usage``) are dropped by SQLite with ``documents`` when a
later migration recreates that table (``batch_alter_table``): such a migration must
call ``usage.create_triggers`` again; ``db check`` and the tests report them missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qprserver.db import usage

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "depositor_usage",
        sa.Column("depositor_id", _ID, nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["depositor_id"],
            ["accounts.id"],
            name=op.f("fk_depositor_usage_depositor_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("depositor_id", name=op.f("pk_depositor_usage")),
    )
    bind = op.get_bind()
    usage.create_triggers(bind)
    usage.recount(bind)


def downgrade() -> None:
    usage.drop_triggers(op.get_bind())
    op.drop_table("depositor_usage")
