"""Tables of the document exchange: routes, documents, deliveries, receipts, download
coverage, upload protocols, bundles and kept partial uploads."""

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
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from qprserver.accounts.enums import Channel
from qprserver.db.base import (
    Base,
    BigIntPK,
    EnumString,
    UTCDateTime,
    intpk,
    sha256_hex,
    utc,
)
from qprserver.db.models.accounts import Account

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
    """One accepted version of an uploaded file; the bytes are a blob by SHA-256.

    Triggers on this table keep ``depositor_usage`` (migration 0016): a migration
    that makes SQLite recreate ``documents`` (``batch_alter_table``: copy, drop,
    rename) drops them with the old table and must create them again
    (``db.usage.create_triggers``); ``tests/functional/test_depositor_usage``
    fails when they are missing.
    """

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


class DepositorUsage(Base):
    """The bytes of a depositor's current documents, what its quota counts.

    Written only by triggers on ``documents`` (insert, delete, update of
    ``current``, ``size`` or ``depositor_id``; migration 0016), in the transaction
    that changes the documents, so no code path can leave it behind the rows it
    sums. A depositor without a current document may have no row (read as 0).
    """

    __tablename__ = "depositor_usage"

    depositor_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    used: Mapped[int] = mapped_column(BigInteger)


class Delivery(Base):
    """A document provided to one recipient, in its inbox, archive, or superseded."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("document_id", "recipient_id"),
        Index("ix_deliveries_recipient_id_folder_id", "recipient_id", "folder", "id"),
        Index("ix_deliveries_recipient_id_folder_name", "recipient_id", "folder", "name"),
        Index("ix_deliveries_recipient_id_folder_kind_id", "recipient_id", "folder", "kind", "id"),
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
    # The document's kind, kept here too (it never changes) so a recipient's folder
    # can be listed by kind from an index (``exchange/listing.py``).
    kind: Mapped[str | None] = mapped_column(String(40))
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
    # How it was downloaded: over SFTP or in the web portal.
    channel: Mapped[Channel] = mapped_column(
        EnumString(Channel, 8), default=Channel.SFTP, server_default=Channel.SFTP.value
    )


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
