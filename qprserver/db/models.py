"""Tables of accounts, credentials and the audit log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from qprserver.db.base import Base, BigIntPK, UTCDateTime, ik_str, intpk, sha256_hex, utc

ROLES = ("depositor", "recipient", "admin")
STATUSES = ("active", "disabled")


class Account(Base):
    """An institution's account, keyed by its IK."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("ik"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
    )

    id: Mapped[intpk]
    ik: Mapped[ik_str]
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    # Sorted, comma-separated subset of ROLES; small and fixed, so no join table.
    roles: Mapped[str] = mapped_column(String(64))
    land: Mapped[str | None] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="active")
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    bundles: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Second factor: the TOTP secret encrypted with the instance key (never in clear),
    # and the last time step used, so each code works once.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Restrictions: source networks (comma-separated CIDRs, empty = any), concurrent
    # sessions (None = unlimited), and an expiry after which logins are refused.
    allowed_networks: Mapped[str] = mapped_column(Text, default="", server_default="")
    max_sessions: Mapped[int | None]
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc]
    updated_at: Mapped[utc]

    keys: Mapped[list[SSHKey]] = relationship(
        back_populates="account", cascade="all, delete-orphan", order_by="SSHKey.id"
    )
    password: Mapped[PasswordCredential | None] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)

    def has_role(self, role: str) -> bool:
        return role in self.role_set

    @property
    def active(self) -> bool:
        return self.status == "active"


class SSHKey(Base):
    """An SSH public key that may log in as its account."""

    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)

    id: Mapped[intpk]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    algorithm: Mapped[str] = mapped_column(String(64))
    bits: Mapped[int | None]
    fingerprint: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[utc]

    account: Mapped[Account] = relationship(back_populates="keys")


class PasswordCredential(Base):
    """An optional argon2id password hash for an account."""

    __tablename__ = "password_credentials"

    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[utc]

    account: Mapped[Account] = relationship(back_populates="password")


class AuditEvent(Base):
    """One append-only audit record; ``hash`` chains it to the row before.

    ``prev_hash`` is unique, so two writers can never fork the chain: the second
    insert fails and is retried on top of the first.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("prev_hash"),
        Index("ix_audit_events_actor_at", "actor", "at"),
    )

    id: Mapped[intpk]
    at: Mapped[utc]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[sha256_hex]
    hash: Mapped[sha256_hex]


FOLDERS = ("inbox", "archive", "superseded")


class Route(Base):
    """A routing rule: documents of a kind about facilities in a Land go to a recipient."""

    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("kind", "land", "recipient_id"),)

    id: Mapped[intpk]
    kind: Mapped[str] = mapped_column(String(40))
    land: Mapped[str] = mapped_column(String(2))
    recipient_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[utc]

    recipient: Mapped[Account] = relationship()


class Document(Base):
    """One accepted version of an uploaded file; the bytes are a blob by SHA-256."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("depositor_id", "name", "version"),
        Index("ix_documents_depositor_id_name_current", "depositor_id", "name", "current"),
    )

    id: Mapped[intpk]
    depositor_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(40))
    subject_ik: Mapped[str | None] = mapped_column(String(9))
    version: Mapped[int]
    current: Mapped[bool] = mapped_column(Boolean, default=True)
    sha256: Mapped[sha256_hex] = mapped_column(index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_at: Mapped[utc]
    # Uploaded to /outbox/<IK>/ for that one recipient; None when routed by name.
    direct_ik: Mapped[str | None] = mapped_column(String(9))
    # The modification time the depositor's client set (setstat), shown in its
    # /outbox so sync tools see what they set; None: the upload time.
    client_mtime: Mapped[datetime | None] = mapped_column(UTCDateTime())

    depositor: Mapped[Account] = relationship()


class Delivery(Base):
    """A document provided to one recipient, in its inbox, archive, or superseded."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("document_id", "recipient_id"),
        Index("ix_deliveries_recipient_id_folder_id", "recipient_id", "folder", "id"),
        Index("ix_deliveries_recipient_id_folder_name", "recipient_id", "folder", "name"),
        CheckConstraint("folder IN ('inbox', 'archive', 'superseded')", name="folder"),
    )

    id: Mapped[intpk]
    document_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("documents.id", ondelete="CASCADE")
    )
    recipient_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("accounts.id"))
    # The name shown in the recipient's folders; unique per recipient and folder.
    name: Mapped[str] = mapped_column(String(300))
    folder: Mapped[str] = mapped_column(String(16), default="inbox")
    created_at: Mapped[utc]
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when the recipient's digest mail listing this delivery was queued; the
    # delivery row itself is the durable intent to notify.
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    document: Mapped[Document] = relationship()
    recipient: Mapped[Account] = relationship()


class DownloadReceipt(Base):
    """An Abrufnachweis: a recipient downloaded a delivery completely."""

    __tablename__ = "download_receipts"

    id: Mapped[intpk]
    delivery_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("accounts.id"))
    at: Mapped[utc]
    sha256: Mapped[sha256_hex]
    remote: Mapped[str] = mapped_column(String(255), default="")


class DownloadCoverage(Base):
    """The byte ranges of a delivery its recipient has read so far without a receipt.

    Handles that read only part of a file (a resumed or parallel download) add their
    ranges here at close; once the ranges cover the whole file a receipt is written
    and the row goes. ``ranges`` is ``start-end,start-end`` (end exclusive), sorted.
    """

    __tablename__ = "download_coverage"

    delivery_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True
    )
    ranges: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[utc]


class Outcome(StrEnum):
    """What became of an upload."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    # The same name with the same bytes as the current version: no new version.
    UNCHANGED = "unchanged"


class UploadProtocol(Base):
    """The protocol of one upload, accepted, rejected or unchanged, shown in ``/receipts``."""

    __tablename__ = "upload_protocols"
    __table_args__ = (
        Index("ix_upload_protocols_depositor_id_id", "depositor_id", "id"),
        CheckConstraint("outcome IN ('accepted', 'rejected', 'unchanged')", name="outcome"),
    )

    id: Mapped[intpk]
    depositor_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("accounts.id"))
    file_name: Mapped[str] = mapped_column(String(300))
    upload_name: Mapped[str] = mapped_column(String(1024))
    outcome: Mapped[str] = mapped_column(String(16))
    document_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("documents.id", ondelete="SET NULL")
    )
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[utc]


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


class Bundle(Base):
    """A ZIP of a recipient's documents for one period, shown in ``/bundles``."""

    __tablename__ = "bundles"
    __table_args__ = (
        UniqueConstraint("recipient_id", "kind", "period"),
        Index("ix_bundles_recipient_id_id", "recipient_id", "id"),
    )

    id: Mapped[intpk]
    recipient_id: Mapped[int] = mapped_column(BigIntPK, ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(40))  # "weekly" or "final:<document kind>"
    period: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[sha256_hex] = mapped_column(index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int]
    created_at: Mapped[utc]
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RecoveryCode(Base):
    """A single-use code that stands in for the TOTP code (hashed)."""

    __tablename__ = "recovery_codes"

    id: Mapped[intpk]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[sha256_hex]
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuthScore(Base):
    """Failed logins of one source address or account, and its ban, shared by all nodes."""

    __tablename__ = "auth_scores"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[intpk]
    # "addr:<ip>" or "account:<ik>"
    key: Mapped[str] = mapped_column(String(80))
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[utc]
    offences: Mapped[int] = mapped_column(default=0)
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[utc]


class PartialUpload(Base):
    """An upload cut off by a dropped connection, kept for its depositor to resume.

    The bytes stay in the blob store's temp folder under ``temp_name``; the row is
    what every process and node goes by: a session resumes it by deleting the row
    (only one can), the sweep job removes it after ``storage.partial_keep``.
    """

    __tablename__ = "partial_uploads"
    __table_args__ = (UniqueConstraint("depositor_id", "path"),)

    id: Mapped[intpk]
    depositor_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    # The client's path in the virtual tree, e.g. "/outbox/bericht.pdf.filepart".
    path: Mapped[str] = mapped_column(String(300))
    temp_name: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)
    client_mtime: Mapped[datetime | None] = mapped_column(UTCDateTime())
    kept_at: Mapped[utc] = mapped_column(index=True)
