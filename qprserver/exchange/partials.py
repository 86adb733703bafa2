"""Uploads cut off by a dropped connection, kept for their depositor to resume.

The bytes stay in the spool of the node that kept them (``storage/spool.py``),
named by their temp name; the rows here are what every process and node goes by.
Only the depositor ever sees a partial upload (in its ``/outbox``), and it becomes a
document only when a resumed upload completes. A row is taken by deleting it, so
two sessions can never resume the same file; the sweep job removes rows and files
after ``storage.partial_keep``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.db import prepared
from qprserver.db.engine import Database, Reads
from qprserver.db.models import PartialUpload
from qprserver.db.prepared import Prepared


@dataclass(frozen=True, slots=True)
class Partial:
    """A kept partial upload as its depositor sees it."""

    path: str
    temp_name: str
    size: int
    mtime: datetime  # the time the client set, else when it was cut off


_COLUMNS = select(
    PartialUpload.path,
    PartialUpload.temp_name,
    PartialUpload.size,
    PartialUpload.client_mtime,
    PartialUpload.kept_at,
).where(PartialUpload.depositor_id == bindparam("depositor"))
# Run by the driver itself (``db/prepared.py``): every completed upload asks it.
_BY_PATH = Prepared(_COLUMNS.where(PartialUpload.path == bindparam("path")))


def _partial(row: tuple[str, str, int, datetime | None, datetime]) -> Partial:
    return Partial(row[0], row[1], row[2], row[3] or row[4])


async def lookup(reads: Reads, depositor_id: int, path: str) -> Partial | None:
    """The partial upload kept at path, if any."""
    found = await prepared.rows(reads, _BY_PATH, {"depositor": depositor_id, "path": path})
    return _partial(found[0]) if found else None


async def in_folder(reads: Reads, depositor_id: int, folder: str) -> list[Partial]:
    """The partial uploads directly in folder (e.g. ``/outbox``), by path."""
    # A depositor has few partial uploads at a time: filtered here, not with LIKE.
    prefix = folder.rstrip("/") + "/"
    rows = await reads.execute(_COLUMNS, {"depositor": depositor_id})
    found = [
        _partial(r) for r in rows if r[0].startswith(prefix) and "/" not in r[0][len(prefix) :]
    ]
    return sorted(found, key=lambda p: p.path)


async def keep(
    db: Database,
    depositor_id: int,
    path: str,
    temp_name: str,
    size: int,
    client_mtime: datetime | None,
    now: datetime,
) -> list[str]:
    """Record a cut-off upload at path; the temp names of partials it replaces."""
    async with db.session() as session:
        replaced = await _remove(session, depositor_id, path)
        session.add(
            PartialUpload(
                depositor_id=depositor_id,
                path=path,
                temp_name=temp_name,
                size=size,
                client_mtime=client_mtime,
                kept_at=now,
            )
        )
    return replaced


async def claim(db: Database, depositor_id: int, path: str) -> Partial | None:
    """Take the partial upload at path to resume it; None when there is none (any more)."""
    found = await db.quick_read(lambda reads: lookup(reads, depositor_id, path))
    if found is None:
        return None  # the common case costs one quick read, no write
    async with db.session() as session:
        taken = await session.execute(
            delete(PartialUpload)
            .where(
                PartialUpload.depositor_id == depositor_id,
                PartialUpload.path == path,
                PartialUpload.temp_name == found.temp_name,
            )
            .returning(PartialUpload.id)
        )
        won = taken.first() is not None
    return found if won else None


async def discard(db: Database, depositor_id: int, path: str) -> list[str]:
    """Forget the partial upload at path; the temp names to remove."""
    found = await db.quick_read(lambda reads: lookup(reads, depositor_id, path))
    if found is None:
        return []
    async with db.session() as session:
        return await _remove(session, depositor_id, path)


async def _remove(session: AsyncSession, depositor_id: int, path: str) -> list[str]:
    rows = await session.execute(
        delete(PartialUpload)
        .where(PartialUpload.depositor_id == depositor_id, PartialUpload.path == path)
        .returning(PartialUpload.temp_name)
    )
    return [r[0] for r in rows]


async def set_mtime(db: Database, depositor_id: int, path: str, mtime: datetime) -> bool:
    """Store the modification time a client set on a partial upload; False if none."""
    async with db.session() as session:
        result = await session.execute(
            update(PartialUpload)
            .where(PartialUpload.depositor_id == depositor_id, PartialUpload.path == path)
            .values(client_mtime=mtime)
            .returning(PartialUpload.id)
        )
        return result.first() is not None


async def expire(db: Database, now: datetime, keep_seconds: float) -> list[str]:
    """Drop partial uploads kept longer than keep_seconds; their temp names."""
    async with db.session() as session:
        rows = await session.execute(
            delete(PartialUpload)
            .where(PartialUpload.kept_at < now - timedelta(seconds=keep_seconds))
            .returning(PartialUpload.temp_name)
        )
        return [r[0] for r in rows]


async def kept_temp_names(db: Database) -> frozenset[str]:
    """The temp files of every kept partial upload (a sweep of temp files spares them)."""
    async with db.read_session() as session:
        return frozenset((await session.scalars(select(PartialUpload.temp_name))).all())
