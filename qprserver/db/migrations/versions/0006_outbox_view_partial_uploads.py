"""outbox view: direct recipient and client mtime of documents, unchanged uploads, partial uploads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partial_uploads",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "depositor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("path", sa.String(length=300), nullable=False),
        sa.Column("temp_name", sa.String(length=80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("client_mtime", qprserver.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("kept_at", qprserver.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["depositor_id"],
            ["accounts.id"],
            name=op.f("fk_partial_uploads_depositor_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partial_uploads")),
        sa.UniqueConstraint(
            "depositor_id", "path", name=op.f("uq_partial_uploads_depositor_id_path")
        ),
    )
    with op.batch_alter_table("partial_uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partial_uploads_kept_at"), ["kept_at"], unique=False)

    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("direct_ik", sa.String(length=9), nullable=True))
        batch_op.add_column(
            sa.Column("client_mtime", qprserver.db.base.UTCDateTime(timezone=True), nullable=True)
        )

    with op.batch_alter_table("upload_protocols", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_upload_protocols_outcome"), type_="check")
        batch_op.create_check_constraint(
            "outcome", "outcome IN ('accepted', 'rejected', 'unchanged')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM upload_protocols WHERE outcome = 'unchanged'")
    with op.batch_alter_table("upload_protocols", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_upload_protocols_outcome"), type_="check")
        batch_op.create_check_constraint("outcome", "outcome IN ('accepted', 'rejected')")

    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("client_mtime")
        batch_op.drop_column("direct_ik")

    with op.batch_alter_table("partial_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partial_uploads_kept_at"))

    op.drop_table("partial_uploads")
