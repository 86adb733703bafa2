"""Is the server ready: the database answers, storage takes writes, jobs are scheduled.

``readiness`` runs the three checks (each bounded in time) for ``/readyz`` and
``qprserver status``; ``status_line`` is what the service manager shows
(``systemctl status``: sessions and queued mails).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from qprserver.accounts.sessions import LEASE
from qprserver.db.engine import Database, Reads
from qprserver.db.models import LoginSession, MailMessage, Node
from qprserver.storage.base import BlobStore

# Seconds each check may take before it counts as failed.
CHECK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Readiness:
    """The result of the checks: each check's name and "ok" or what failed."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(result == "ok" for result in self.checks.values())

    def as_json(self) -> dict[str, object]:
        return {"status": "ready" if self.ready else "not ready", "checks": self.checks}


async def _database(db: Database) -> None:
    async def work(reads: Reads) -> object:
        return await reads.scalar(select(1))

    await db.quick_read(work)


def _storage(blobs: BlobStore) -> None:
    # The path every upload takes first: a spool file written, then thrown away.
    writer = blobs.begin_write()
    try:
        writer.write(0, b"qprserver readiness check\n")
    finally:
        writer.abort()


async def _bounded(name: str, check: asyncio.Future[None] | asyncio.Task[None]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return f"{name}: no answer within {CHECK_TIMEOUT:.0f} s"
    except Exception as exc:
        return f"{name}: {type(exc).__name__}: {exc}"
    return "ok"


async def readiness(
    db: Database, blobs: BlobStore, scheduler_running: Callable[[], bool]
) -> Readiness:
    """Run the checks: database reachable, storage writable, scheduler running."""
    database = _bounded("database", asyncio.ensure_future(_database(db)))
    storage = _bounded("storage", asyncio.ensure_future(asyncio.to_thread(_storage, blobs)))
    db_result, storage_result = await asyncio.gather(database, storage)
    scheduler = "ok" if scheduler_running() else "scheduler: not running"
    return Readiness({"database": db_result, "storage": storage_result, "scheduler": scheduler})


async def status_line(db: Database, now: datetime) -> str:
    """Sessions on this machine's live processes and mails waiting to be sent."""
    host = socket.gethostname()

    async def work(reads: Reads) -> tuple[int, int]:
        sessions = await reads.scalar(
            select(func.count(LoginSession.id))
            .join(Node, LoginSession.node_id == Node.id)
            .where(Node.host == host, Node.heartbeat_at > now - LEASE)
        )
        queued = await reads.scalar(
            select(func.count(MailMessage.id)).where(MailMessage.status == "queued")
        )
        return int(sessions or 0), int(queued or 0)

    sessions, queued = await db.quick_read(work)
    return f"{sessions} session(s), {queued} mail(s) queued"
