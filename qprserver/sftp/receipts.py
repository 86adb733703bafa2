"""Download receipts and login events written in batches, off the request path.

A complete download, a partial one or a login only appends to a list; a background
task writes what has gathered every ``interval`` seconds in one transaction (the
partial reads settled against the stored coverage, two multi-row inserts and one
audit-chain append), and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from qprserver import audit, coverage, mailbox
from qprserver.coverage import PartialRead
from qprserver.db.engine import Database

if TYPE_CHECKING:
    from qprserver.db.models import Account
    from qprserver.sftp.handles import DownloadHandle

log = logging.getLogger(__name__)


Item = mailbox.Download | PartialRead | audit.Event


def _split(
    batch: list[Item],
) -> tuple[list[mailbox.Download], list[mailbox.Download | PartialRead], list[audit.Event]]:
    """The batch's complete downloads; its reads in order (for coverage); its events."""
    downloads = [d for d in batch if isinstance(d, mailbox.Download)]
    reads = [r for r in batch if isinstance(r, mailbox.Download | PartialRead)]
    events = [
        mailbox.download_event(item) if isinstance(item, mailbox.Download) else item
        for item in batch
        if not isinstance(item, PartialRead)
    ]
    return downloads, reads, events


def _settle(
    session: Session, reads: list[mailbox.Download | PartialRead]
) -> list[mailbox.Download]:
    return coverage.settle(session.connection(), reads)


def _write_now(
    conn: Connection,
    downloads: list[mailbox.Download],
    reads: list[mailbox.Download | PartialRead],
    events: list[audit.Event],
) -> None:
    completed = coverage.settle(conn, reads)
    downloads = downloads + completed
    if downloads:
        conn.execute(mailbox.INSERT_RECEIPTS, mailbox.receipt_rows(downloads))
    audit.append_now(conn, events + [mailbox.download_event(d) for d in completed])


class ReceiptRecorder:
    """Collects complete downloads and other audit events and writes them in batches."""

    def __init__(self, db: Database, interval: float = 0.25, batch: int = 200) -> None:
        self._db = db
        self._interval = interval
        self._batch = batch
        self._pending: list[Item] = []
        self._wake = asyncio.Event()
        # One writer at a time: a flush returns only once what it found is written,
        # even when the background task had already taken it.
        self._lock = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, item: Item) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def add_read(self, handle: DownloadHandle, account: Account, at: datetime, remote: str) -> None:
        """What a closed download handle served: a receipt, a part of one, or nothing."""
        if handle.delivery_id is None:
            return
        download = mailbox.Download(
            account.id, account.ik, handle.delivery_id, handle.sha256, handle.name, at, remote
        )
        ranges = handle.ranges()
        if coverage.covers(ranges, handle.size):
            self.add(download)
        elif ranges:
            self.add(PartialRead(download, handle.size, tuple(ranges)))

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="receipt-recorder")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything gathered so far; kept for the next try when the database fails."""
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                downloads, reads, events = _split(batch)
                try:
                    if self._db.write_now(
                        functools.partial(
                            _write_now, downloads=downloads, reads=reads, events=events
                        )
                    ):
                        continue
                    async with self._db.session() as session:
                        completed = await session.run_sync(_settle, reads)
                        await mailbox.record_receipts(session, downloads + completed)
                        await audit.record_many(
                            session, events + [mailbox.download_event(d) for d in completed]
                        )
                except Exception:
                    log.exception("writing %d receipts and events failed; will retry", len(batch))
                    self._pending[:0] = batch
                    return

    async def stop(self) -> None:
        """Write what is left and stop; a batch being written is never cut off."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self._wake.set()
            await task
        await self.flush()
