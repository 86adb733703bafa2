"""accounts.login (the user name of both edges; the IK, backfilled) and accounts.site
(a report registration's Standort); one account per IK without a site

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_INSTITUTION = sa.text("site IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("login", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("site", sa.String(length=6), nullable=True))
    op.execute("UPDATE accounts SET login = ik")
    with op.batch_alter_table("accounts") as batch:
        batch.alter_column("login", existing_type=sa.String(length=16), nullable=False)
        batch.drop_constraint(op.f("uq_accounts_ik"), type_="unique")
        batch.create_unique_constraint(op.f("uq_accounts_login"), ["login"])
    op.create_index(
        "uq_accounts_ik_institution",
        "accounts",
        ["ik"],
        unique=True,
        sqlite_where=_INSTITUTION,
        postgresql_where=_INSTITUTION,
    )


def downgrade() -> None:
    left = op.get_bind().scalar(sa.text("SELECT count(*) FROM accounts WHERE site IS NOT NULL"))
    if left:
        raise RuntimeError(
            f"{left} accounts of report registrations (login <IK>-<Standort>) exist; "
            "revision 0012 has one account per IK: remove them before downgrading"
        )
    op.drop_index("uq_accounts_ik_institution", table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("uq_accounts_login"), type_="unique")
        batch.create_unique_constraint(op.f("uq_accounts_ik"), ["ik"])
        batch.drop_column("site")
        batch.drop_column("login")
