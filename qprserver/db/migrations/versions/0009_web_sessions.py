"""web sessions: the portal's logins, kept on the server; a receipt's channel; a
delivery's kind (for listing by kind)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("stage", sa.String(length=8), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("pending_totp", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=200), nullable=False),
        sa.Column("created_at", qprserver.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", qprserver.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "stage IN ('code', 'enrol', 'full')", name=op.f("ck_web_sessions_stage")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_web_sessions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_sessions_token_hash")),
    )
    op.create_index(
        op.f("ix_web_sessions_account_id"), "web_sessions", ["account_id"], unique=False
    )
    with op.batch_alter_table("download_receipts") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(length=8), server_default="sftp", nullable=False)
        )
    op.add_column("deliveries", sa.Column("kind", sa.String(length=40), nullable=True))
    op.execute(
        "UPDATE deliveries SET kind = "
        "(SELECT documents.kind FROM documents WHERE documents.id = deliveries.document_id)"
    )
    op.create_index(
        "ix_deliveries_recipient_id_folder_kind_id",
        "deliveries",
        ["recipient_id", "folder", "kind", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_recipient_id_folder_kind_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("kind")
    with op.batch_alter_table("download_receipts") as batch:
        batch.drop_column("channel")
    op.drop_index(op.f("ix_web_sessions_account_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
