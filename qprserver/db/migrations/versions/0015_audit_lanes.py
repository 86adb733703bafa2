"""audit_events.lane: the audit log as a few hash chains side by side, so that
appends on several nodes do not wait for one lock; the rows so far form lane 0

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lane", sa.SmallInteger(), server_default="0", nullable=False)
        )
        batch_op.create_index("ix_audit_events_lane_id", ["lane", "id"], unique=False)


def downgrade() -> None:
    # Only lane 0 is one chain by itself: rows of other lanes would no longer verify
    # as one chain, and chaining them anew needs the audit key.
    used = op.get_bind().execute(sa.text("SELECT 1 FROM audit_events WHERE lane <> 0 LIMIT 1"))
    if used.first() is not None:
        raise RuntimeError("audit_events uses several lanes; a downgrade would break the chain")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_lane_id")
        batch_op.drop_column("lane")
