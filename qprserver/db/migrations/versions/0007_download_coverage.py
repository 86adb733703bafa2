"""download coverage: byte ranges read towards a receipt

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 05:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "download_coverage",
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("ranges", sa.Text(), nullable=False),
        sa.Column("updated_at", qprserver.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_download_coverage_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_download_coverage")),
    )


def downgrade() -> None:
    op.drop_table("download_coverage")
