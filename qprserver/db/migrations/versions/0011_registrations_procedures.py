"""registrations, one-time tokens, procedures per account, the pending account state

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = qprserver.db.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(
            sa.Column(
                "procedures",
                sa.String(length=64),
                server_default="QPR_0_SFTP,QPR_0_WEB",
                nullable=False,
            )
        )
        batch.drop_constraint(op.f("ck_accounts_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_accounts_status"), "status IN ('active', 'disabled', 'pending')"
        )
    op.create_table(
        "registrations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("ik", sa.String(length=9), nullable=False),
        sa.Column("institution", sa.String(length=200), nullable=False),
        sa.Column("contact", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("street", sa.String(length=200), nullable=False),
        sa.Column("postcode", sa.String(length=10), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("roles", sa.String(length=64), nullable=False),
        sa.Column("procedures", sa.String(length=64), nullable=False),
        sa.Column("ssh_key", sa.Text(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("confirmed_at", _UTC, nullable=True),
        sa.Column("applied_at", _UTC, nullable=True),
        sa.Column("decided_at", _UTC, nullable=True),
        sa.Column("reminded_at", _UTC, nullable=True),
        sa.Column("activated_at", _UTC, nullable=True),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "state IN ('registriert', 'bestaetigt', 'beantragt', 'freigeschaltet', 'abgelehnt')",
            name=op.f("ck_registrations_state"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_registrations_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registrations")),
    )
    op.create_index(
        op.f("ix_registrations_account_id"), "registrations", ["account_id"], unique=False
    )
    op.create_index("ix_registrations_ik_state", "registrations", ["ik", "state"], unique=False)
    op.create_index(
        "ix_registrations_address_created_at",
        "registrations",
        ["address", "created_at"],
        unique=False,
    )
    op.create_table(
        "one_time_tokens",
        sa.Column("id", _ID, nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("registration_id", _ID, nullable=True),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("expires_at", _UTC, nullable=False),
        sa.Column("used_at", _UTC, nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "purpose IN ('confirm', 'password', 'reset', 'letter')",
            name=op.f("ck_one_time_tokens_purpose"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_one_time_tokens_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registrations.id"],
            name=op.f("fk_one_time_tokens_registration_id_registrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_one_time_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_one_time_tokens_token_hash")),
    )
    op.create_index(
        op.f("ix_one_time_tokens_account_id"), "one_time_tokens", ["account_id"], unique=False
    )
    op.create_index(
        op.f("ix_one_time_tokens_registration_id"),
        "one_time_tokens",
        ["registration_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_one_time_tokens_registration_id"), table_name="one_time_tokens")
    op.drop_index(op.f("ix_one_time_tokens_account_id"), table_name="one_time_tokens")
    op.drop_table("one_time_tokens")
    op.drop_index("ix_registrations_address_created_at", table_name="registrations")
    op.drop_index("ix_registrations_ik_state", table_name="registrations")
    op.drop_index(op.f("ix_registrations_account_id"), table_name="registrations")
    op.drop_table("registrations")
    op.execute("UPDATE accounts SET status = 'disabled' WHERE status = 'pending'")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_status"), type_="check")
        batch.create_check_constraint(
            op.f("ck_accounts_status"), "status IN ('active', 'disabled')"
        )
        batch.drop_column("procedures")
