"""Download receipts and login events written in batches, off the request path.

A complete download or a login only appends to a list; a background task writes
what has gathered every ``interval`` seconds in one transaction (two multi-row
inserts and one audit-chain append), and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from sqlalchemy import Connection

from qprserver import audit, mailbox
from qprserver.db.engine import Database

log = logging.getLogger(__name__)


def _event(item: mailbox.Download | audit.Event) -> audit.Event:
    return mailbox.download_event(item) if isinstance(item, mailbox.Download) else item


def _write_now(
    conn: Connection, downloads: list[mailbox.Download], events: list[audit.Event]
) -> None:
    if downloads:
        conn.execute(mailbox.INSERT_RECEIPTS, mailbox.receipt_rows(downloads))
    audit.append_now(conn, events)


class ReceiptRecorder:
    """Collects complete downloads and other audit events and writes them in batches."""

    def __init__(self, db: Database, interval: float = 0.25, batch: int = 200) -> None:
        self._db = db
        self._interval = interval
        self._batch = batch
        self._pending: list[mailbox.Download | audit.Event] = []
        self._wake = asyncio.Event()
        # One writer at a time: a flush returns only once what it found is written,
        # even when the background task had already taken it.
        self._lock = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, item: mailbox.Download | audit.Event) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._batch:
            self._wake.set()

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
                downloads = [d for d in batch if isinstance(d, mailbox.Download)]
                events = [_event(item) for item in batch]
                try:
                    if self._db.write_now(
                        functools.partial(_write_now, downloads=downloads, events=events)
                    ):
                        continue
                    async with self._db.session() as session:
                        await mailbox.record_receipts(session, downloads)
                        await audit.record_many(session, events)
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
