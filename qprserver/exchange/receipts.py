"""Download receipts (Abrufnachweise) and the audit events that go with them: the one
way they are written.

A batch holds, in the order they happened, complete downloads, partial reads (settled
against the stored coverage, see ``coverage``) and other audit events (logins).
``write`` records a batch on a connection in a write transaction: the coverage settled,
the receipts inserted in one statement, the events appended to the audit chain.
``record`` picks that connection: on SQLite the fast path right on the event loop
(``Database.write_now``) when the write lock is free, otherwise a write session.

Callers gather and time the batches (the SFTP edge's ``ReceiptRecorder``); this module
does not know them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert

from qprserver.accounts.enums import Channel
from qprserver.audit import chain as audit
from qprserver.db.engine import Database
from qprserver.db.models import DownloadReceipt
from qprserver.exchange import coverage
from qprserver.exchange.coverage import PartialRead
from qprserver.observability import events, logs


@dataclass(frozen=True, slots=True)
class Download:
    """A complete download, to be recorded as a receipt."""

    account_id: int
    account_ik: str
    delivery_id: int
    sha256: str
    name: str
    at: datetime
    remote: str
    # Which channel served it; for the ``download.complete`` event also the document's
    # size, the seconds its transfer took, and the log ids of the request that ended
    # it (the event is told once the receipt is written, outside that request).
    channel: Channel = Channel.SFTP
    size: int = 0
    seconds: float = 0.0
    context: tuple[tuple[str, Any], ...] = field(default_factory=logs.current_ids)


Item = Download | PartialRead | audit.Event

# Core, not the ORM's bulk insert: no per-row ORM work.
_INSERT_RECEIPTS = insert(cast(Table, DownloadReceipt.__table__))


def download_event(d: Download) -> audit.Event:
    """The audit event of a receipt (the channel named when it is not SFTP, so SFTP's
    events read as they always have)."""
    details: dict[str, object] = {"delivery": d.delivery_id, "name": d.name, "sha256": d.sha256}
    if d.channel is not Channel.SFTP:
        details["channel"] = d.channel.value
    return audit.Event(audit.Actor(d.account_ik, d.remote), "download", d.at, d.account_ik, details)


@dataclass(frozen=True, slots=True)
class Batch:
    """What to write at once, split by how it is written."""

    downloads: list[Download] = field(default_factory=list)
    # Complete downloads and partial reads in order, for the coverage.
    reads: list[Download | PartialRead] = field(default_factory=list)
    # The audit events in order: the downloads' and the others (partial reads have none).
    events: list[audit.Event] = field(default_factory=list)

    @classmethod
    def of(cls, items: Sequence[Item]) -> Batch:
        return cls(
            downloads=[d for d in items if isinstance(d, Download)],
            reads=[r for r in items if isinstance(r, Download | PartialRead)],
            events=[
                download_event(item) if isinstance(item, Download) else item
                for item in items
                if not isinstance(item, PartialRead)
            ],
        )


def write(conn: Connection, batch: Batch, audit_key: bytes | None) -> list[Download]:
    """Write a batch on a connection in the caller's write transaction; the complete
    downloads it recorded (partial reads that completed a download among them)."""
    completed = coverage.settle(conn, batch.reads)
    downloads = batch.downloads + completed
    if downloads:
        conn.execute(
            _INSERT_RECEIPTS,
            [
                {
                    "delivery_id": d.delivery_id,
                    "account_id": d.account_id,
                    "at": d.at,
                    "sha256": d.sha256,
                    "remote": d.remote,
                    "channel": d.channel,
                }
                for d in downloads
            ],
        )
    audit.append(conn, batch.events + [download_event(d) for d in completed], audit_key)
    return downloads


async def record(db: Database, batch: Batch) -> None:
    """Write a batch in one transaction: SQLite's fast path when it is free, else
    ``Database.write`` (which waits its turn for the write lock). Each complete download
    is told (``download.complete``) once written."""
    written: list[Download] = []
    if not db.write_now(lambda conn: written.extend(write(conn, batch, db.audit_key))):
        written = await db.write(lambda conn: write(conn, batch, db.audit_key))
    for d in written:
        events.download(
            d.channel,
            account=d.account_ik,
            document=d.name,
            delivery=d.delivery_id,
            sha256=d.sha256,
            size=d.size,
            seconds=d.seconds,
            context=dict(d.context),
        )
