"""Download receipts and login events gathered in batches, off the request path.

A complete download, a partial one or a login only appends to a list; a background
task hands what has gathered every ``interval`` seconds to ``exchange.receipts``,
which writes it in one transaction, and once more at shutdown. This module only
gathers, times and retries; how a batch is written is the domain's.

Downloads still open are checkpointed every ``CHECKPOINT_SECONDS``: the ranges a
handle has served so far go to the stored coverage as a partial read. A node killed
mid-download (``kill -9``, a crash) so loses at most the last few seconds of what it
served, and a client that resumes on another node (``reget``) still completes the
union there: one receipt, as without the crash. A checkpointed handle reports its
ranges at close as a partial read too, so the union, not the handle alone, decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from qprserver.db.engine import Database
from qprserver.exchange import coverage, receipts
from qprserver.exchange.coverage import PartialRead

if TYPE_CHECKING:
    from qprserver.db.models import Account
    from qprserver.sftp.handles import DownloadHandle

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0


@dataclass(eq=False)
class _Open:
    """A download being served, and the ranges of it already checkpointed."""

    handle: DownloadHandle
    download: receipts.Download
    sent: list[coverage.Range] = field(default_factory=list)


class ReceiptRecorder:
    """Collects complete downloads and other audit events and writes them in batches."""

    def __init__(self, db: Database, interval: float = 0.25, batch: int = 200) -> None:
        self._db = db
        self._open: dict[int, _Open] = {}
        self._checkpointed_at = time.monotonic()
        self._interval = interval
        self._batch = batch
        self._pending: list[receipts.Item] = []
        self._wake = asyncio.Event()
        # One writer at a time: a flush returns only once what it found is written,
        # even when the background task had already taken it.
        self._lock = asyncio.Lock()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, item: receipts.Item) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._batch:
            self._wake.set()

    def track(self, handle: DownloadHandle, account: Account, at: datetime, remote: str) -> None:
        """A download handle opened: checkpoint what it serves until it closes."""
        if handle.delivery_id is None:
            return
        download = receipts.Download(
            account.id,
            account.login,
            handle.delivery_id,
            handle.sha256,
            handle.name,
            at,
            remote,
        )
        self._open[id(handle)] = _Open(handle, download)

    def add_read(self, handle: DownloadHandle, account: Account, at: datetime, remote: str) -> None:
        """What a closed download handle served: a receipt, a part of one, or nothing."""
        tracked = self._open.pop(id(handle), None)
        if handle.delivery_id is None:
            return
        download = receipts.Download(
            account.id,
            account.login,
            handle.delivery_id,
            handle.sha256,
            handle.name,
            at,
            remote,
            size=handle.size,
            seconds=time.monotonic() - handle.opened,
        )
        ranges = handle.ranges()
        if coverage.covers(ranges, handle.size) and not (tracked and tracked.sent):
            self.add(download)
        elif ranges:
            self.add(PartialRead(download, handle.size, tuple(ranges)))

    def checkpoint(self) -> None:
        """Queue the ranges open downloads served since their last checkpoint."""
        self._checkpointed_at = time.monotonic()
        for tracked in self._open.values():
            handle = tracked.handle
            ranges = handle.ranges()
            if not ranges or ranges == tracked.sent or coverage.covers(ranges, handle.size):
                continue  # nothing new, or complete: its close writes the receipt
            self.add(PartialRead(tracked.download, handle.size, tuple(ranges)))
            tracked.sent = ranges

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="receipt-recorder")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._open and time.monotonic() - self._checkpointed_at >= CHECKPOINT_SECONDS:
                self.checkpoint()
            await self.flush()

    async def flush(self) -> None:
        """Write everything gathered so far; kept for the next try when the database fails."""
        async with self._lock:
            while self._pending:
                batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                try:
                    await receipts.record(self._db, receipts.Batch.of(batch))
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
