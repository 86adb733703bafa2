"""qb_registrations: the reported mismatch, the correction, the confirmation mail;
qb_c1_deliveries: accepted C-1 parts (Null-Meldungen marked); the one-time token
purpose 'qb-correct'

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 12:00:00.000000

The token purposes are read from the database's own check constraint and 'qb-correct'
is added to (or on downgrade removed from) what is there, so this revision keeps
whatever purposes a revision before it added.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

import qprserver.db.base

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = qprserver.db.base.UTCDateTime(timezone=True)
_PURPOSE = "qb-correct"
_CHECK = "ck_one_time_tokens_purpose"


def _purposes() -> list[str]:
    """The token purposes the database's check constraint allows now, in its order."""
    for check in sa.inspect(op.get_bind()).get_check_constraints("one_time_tokens"):
        if check["name"] == _CHECK:
            # SQLite keeps "purpose IN ('a', 'b')"; PostgreSQL shows "= ANY (ARRAY['a'::…])".
            return list(dict.fromkeys(re.findall(r"'([^']*)'", check["sqltext"])))
    raise RuntimeError(f"one_time_tokens has no check constraint {_CHECK}")


def _allow(purposes: list[str]) -> None:
    listed = ", ".join(f"'{p}'" for p in purposes)
    with op.batch_alter_table("one_time_tokens") as batch:
        batch.drop_constraint(op.f(_CHECK), type_="check")
        batch.create_check_constraint(op.f(_CHECK), f"purpose IN ({listed})")


def upgrade() -> None:
    with op.batch_alter_table("qb_registrations") as batch:
        batch.add_column(sa.Column("mismatch", sa.Text(), nullable=True))
        batch.add_column(sa.Column("mismatch_at", _UTC, nullable=True))
        batch.add_column(sa.Column("corrected_at", _UTC, nullable=True))
        batch.add_column(sa.Column("confirmation_sent_at", _UTC, nullable=True))
    op.create_table(
        "qb_c1_deliveries",
        sa.Column("id", _ID, nullable=False),
        sa.Column("document_id", _ID, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("ik", sa.String(length=9), nullable=False),
        sa.Column("site", sa.String(length=6), nullable=False),
        sa.Column("part", sa.String(length=4), nullable=False),
        sa.Column("null_report", sa.Boolean(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.CheckConstraint("part IN ('Land', 'bund')", name=op.f("ck_qb_c1_deliveries_part")),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_qb_c1_deliveries_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qb_c1_deliveries")),
        sa.UniqueConstraint("document_id", name=op.f("uq_qb_c1_deliveries_document_id")),
    )
    op.create_index("ix_qb_c1_deliveries_year", "qb_c1_deliveries", ["year"], unique=False)
    purposes = _purposes()
    if _PURPOSE not in purposes:
        _allow([*purposes, _PURPOSE])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM one_time_tokens WHERE purpose = :p").bindparams(p=_PURPOSE))
    _allow([p for p in _purposes() if p != _PURPOSE])
    op.drop_index("ix_qb_c1_deliveries_year", table_name="qb_c1_deliveries")
    op.drop_table("qb_c1_deliveries")
    with op.batch_alter_table("qb_registrations") as batch:
        batch.drop_column("confirmation_sent_at")
        batch.drop_column("corrected_at")
        batch.drop_column("mismatch_at")
        batch.drop_column("mismatch")
