"""Writing download receipts: one batch, one transaction, through the fast path or a
session; on SQLite a batch that meets another connection's write lock falls back to a
session and is still written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from qprserver.audit import chain as audit
from qprserver.audit import check as audit_check
from qprserver.db.engine import Database, Reads, is_sqlite_busy
from qprserver.db.models import Account, AuditEvent, Delivery, Document, DownloadReceipt
from qprserver.exchange import receipts
from qprserver.exchange.coverage import PartialRead
from tests.conftest import BACKEND

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SHA = "ab" * 32
sqlite_only = pytest.mark.skipif(
    BACKEND != "sqlite", reason="SQLite's write lock and fast paths; PostgreSQL has neither"
)


async def _two_deliveries(db: Database) -> tuple[Account, list[int]]:
    async with db.session() as session:
        depositor = Account(
            ik="190500027", name="MD", roles="depositor", created_at=T0, updated_at=T0
        )
        recipient = Account(
            ik="105830016", name="LV", roles="recipient", created_at=T0, updated_at=T0
        )
        session.add_all([depositor, recipient])
        await session.flush()
        ids = []
        for n in range(2):
            document = Document(
                depositor_id=depositor.id,
                name=f"d{n}.pdf",
                kind="direkt",
                version=1,
                sha256=SHA,
                size=100,
                uploaded_at=T0,
            )
            session.add(document)
            await session.flush()
            delivery = Delivery(
                document_id=document.id,
                recipient_id=recipient.id,
                name=f"d{n}.pdf",
                folder="inbox",
                created_at=T0,
            )
            session.add(delivery)
            await session.flush()
            ids.append(delivery.id)
    return recipient, ids


def _download(recipient: Account, delivery_id: int) -> receipts.Download:
    return receipts.Download(
        recipient.id, recipient.ik, delivery_id, SHA, "d.pdf", T0, "192.0.2.7:5555"
    )


def _batch(recipient: Account, deliveries: list[int]) -> receipts.Batch:
    first, second = deliveries
    login = audit.Event(audit.Actor(recipient.ik, "192.0.2.7:5555"), "login", T0, recipient.ik)
    return receipts.Batch.of(
        [
            login,
            _download(recipient, first),
            # Two halves read through two handles: together one receipt.
            PartialRead(_download(recipient, second), 100, ((0, 50),)),
            PartialRead(_download(recipient, second), 100, ((50, 100),)),
        ]
    )


async def _written(db: Database) -> tuple[int, list[str], int]:
    """Receipts, audit actions in chain order, rows the chain verifies."""
    async with db.read_session() as session:
        count = await session.scalar(select(func.count()).select_from(DownloadReceipt))
        actions = list(
            (await session.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all()
        )
        verified = await audit_check.verify(session)
    return int(count or 0), actions, verified


async def test_a_batch_writes_its_receipts_and_chains_its_events_in_order(db: Database) -> None:
    recipient, deliveries = await _two_deliveries(db)
    await receipts.record(db, _batch(recipient, deliveries))
    assert await _written(db) == (2, ["login", "download", "download"], 3)


@contextmanager
def _write_lock_held(db: Database) -> Iterator[sqlite3.Connection]:
    """Another connection to the same file holding SQLite's write lock until the
    block ends or the lock is given up (``rollback``)."""
    holder = sqlite3.connect(str(make_url(db.url).database), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        if holder.in_transaction:
            holder.rollback()
        holder.close()


@sqlite_only
async def test_the_fast_path_gives_way_to_another_connections_write_lock(db: Database) -> None:
    touched: list[bool] = []
    with _write_lock_held(db):
        assert db.write_now(lambda conn: touched.append(True)) is False
    assert touched == []  # refused at BEGIN, before the work ran
    assert db.write_now(lambda conn: touched.append(True)) is True
    assert touched == [True]


@sqlite_only
async def test_a_batch_meeting_the_write_lock_falls_back_to_a_session_and_is_written(
    db: Database,
) -> None:
    recipient, deliveries = await _two_deliveries(db)
    loop = asyncio.get_running_loop()
    with _write_lock_held(db) as holder:
        # The fast path gives up after 20 ms; the session waits in SQLite's busy handler
        # (aiosqlite's thread), so the loop runs on and lets the holder go.
        loop.call_later(0.3, holder.rollback)
        await receipts.record(db, _batch(recipient, deliveries))
        assert not holder.in_transaction  # written only once the lock was given up
    assert await _written(db) == (2, ["login", "download", "download"], 3)


@sqlite_only
async def test_a_quick_read_failing_for_another_reason_than_a_lock_raises(db: Database) -> None:
    async def broken(reads: Reads) -> object:
        return await reads.execute(text("SELECT count(*) FROM no_such_table"))

    with pytest.raises(OperationalError, match="no such table"):
        await db.quick_read(broken)


@pytest.mark.parametrize(
    ("code", "busy"),
    [
        (sqlite3.SQLITE_BUSY, True),
        (sqlite3.SQLITE_LOCKED, True),
        (517, True),  # SQLITE_BUSY_SNAPSHOT: an extended code of SQLITE_BUSY
        (262, True),  # SQLITE_LOCKED_SHAREDCACHE
        (1, False),  # SQLITE_ERROR, whatever its message says
    ],
)
def test_a_lock_is_told_by_the_error_code_not_the_message(code: int, busy: bool) -> None:
    orig = sqlite3.OperationalError("database is locked" if not busy else "something else")
    orig.sqlite_errorcode = code
    assert is_sqlite_busy(OperationalError("BEGIN IMMEDIATE", None, orig)) is busy


def test_an_error_without_a_sqlite_code_is_no_lock() -> None:
    assert not is_sqlite_busy(OperationalError("BEGIN", None, RuntimeError("database is busy")))
