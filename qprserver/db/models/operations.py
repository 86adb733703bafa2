"""Tables of the audit log, the mail outbox and the job runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from qprserver.db.base import (
    Base,
    BigIntPK,
    UTCDateTime,
    intpk,
    sha256_hex,
    utc,
)


class AuditEvent(Base):
    """One append-only audit record; ``hash`` chains it to the row before in its lane.

    The log is a few chains side by side (``lane``, see ``audit/chain.py``) so that
    writers on several nodes need not wait for each other. ``prev_hash`` is unique
    (every lane starts from its own genesis), so two writers can never fork a chain:
    the second insert fails and is retried on top of the first.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("prev_hash"),
        Index("ix_audit_events_actor_at", "actor", "at"),
        Index("ix_audit_events_lane_id", "lane", "id"),
    )

    id: Mapped[intpk]
    lane: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    at: Mapped[utc]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[sha256_hex]
    hash: Mapped[sha256_hex]


MAIL_STATUSES = ("queued", "sending", "sent", "dead")


class MailMessage(Base):
    """A mail in the transactional outbox, rendered when queued, sent by a job."""

    __tablename__ = "mail_outbox"
    __table_args__ = (
        UniqueConstraint("dedupe_key"),
        Index("ix_mail_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        CheckConstraint("status IN ('queued', 'sending', 'sent', 'dead')", name="status"),
    )

    id: Mapped[intpk]
    dedupe_key: Mapped[str] = mapped_column(String(200))
    template: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="SET NULL")
    )
    to_addr: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[utc]
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[utc]
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobRun(Base):
    """One run of a job for one period; the unique key makes each period run once."""

    __tablename__ = "job_runs"
    __table_args__ = (
        UniqueConstraint("job", "period"),
        CheckConstraint("status IN ('running', 'done', 'failed')", name="status"),
    )

    id: Mapped[intpk]
    job: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    holder: Mapped[str] = mapped_column(String(128))
    lease_until: Mapped[utc]
    started_at: Mapped[utc]
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[str] = mapped_column(Text, default="{}")
