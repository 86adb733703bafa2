"""qb_registrations: one registration per report and year; their confirmation tokens;
qb_positive_list: the G-BA's positive list per report year

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = qprserver.db.base.UTCDateTime(timezone=True)
_PURPOSES = "'confirm', 'password', 'reset', 'letter'"


def upgrade() -> None:
    op.create_table(
        "qb_registrations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("ik", sa.String(length=9), nullable=False),
        sa.Column("site", sa.String(length=6), nullable=False),
        sa.Column("hospital", sa.String(length=200), nullable=False),
        sa.Column("contact", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("basis", sa.String(length=24), nullable=False),
        sa.Column("further_iks", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("account_id", _ID, nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("confirmed_at", _UTC, nullable=True),
        sa.Column("reminded_at", _UTC, nullable=True),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.CheckConstraint(
            "state IN ('registriert', 'bestaetigt')", name=op.f("ck_qb_registrations_state")
        ),
        sa.CheckConstraint(
            "basis IN ('hochschulklinik', 'plankrankenhaus', 'versorgungsvertrag')",
            name=op.f("ck_qb_registrations_basis"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_qb_registrations_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qb_registrations")),
        sa.UniqueConstraint("year", "ik", "site", name=op.f("uq_qb_registrations_year_ik_site")),
    )
    op.create_index(
        op.f("ix_qb_registrations_account_id"), "qb_registrations", ["account_id"], unique=False
    )
    op.create_index(
        "ix_qb_registrations_year_state", "qb_registrations", ["year", "state"], unique=False
    )
    op.create_index(
        "ix_qb_registrations_address_created_at",
        "qb_registrations",
        ["address", "created_at"],
        unique=False,
    )
    op.create_table(
        "qb_positive_list",
        sa.Column("id", _ID, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("ik", sa.String(length=9), nullable=False),
        sa.Column("site", sa.String(length=6), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("imported_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qb_positive_list")),
        sa.UniqueConstraint("year", "ik", "site", name=op.f("uq_qb_positive_list_year_ik_site")),
    )
    with op.batch_alter_table("one_time_tokens") as batch:
        batch.add_column(sa.Column("qb_registration_id", _ID, nullable=True))
        batch.create_foreign_key(
            op.f("fk_one_time_tokens_qb_registration_id_qb_registrations"),
            "qb_registrations",
            ["qb_registration_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index(
            op.f("ix_one_time_tokens_qb_registration_id"), ["qb_registration_id"], unique=False
        )
        batch.drop_constraint(op.f("ck_one_time_tokens_purpose"), type_="check")
        batch.create_check_constraint(
            op.f("ck_one_time_tokens_purpose"), f"purpose IN ({_PURPOSES}, 'qb-confirm')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM one_time_tokens WHERE purpose = 'qb-confirm'")
    with op.batch_alter_table("one_time_tokens") as batch:
        batch.drop_constraint(op.f("ck_one_time_tokens_purpose"), type_="check")
        batch.create_check_constraint(
            op.f("ck_one_time_tokens_purpose"), f"purpose IN ({_PURPOSES})"
        )
        batch.drop_index(op.f("ix_one_time_tokens_qb_registration_id"))
        batch.drop_constraint(
            op.f("fk_one_time_tokens_qb_registration_id_qb_registrations"), type_="foreignkey"
        )
        batch.drop_column("qb_registration_id")
    op.drop_table("qb_positive_list")
    op.drop_index("ix_qb_registrations_address_created_at", table_name="qb_registrations")
    op.drop_index("ix_qb_registrations_year_state", table_name="qb_registrations")
    op.drop_index(op.f("ix_qb_registrations_account_id"), table_name="qb_registrations")
    op.drop_table("qb_registrations")
