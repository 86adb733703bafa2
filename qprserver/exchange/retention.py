"""Retention: deliveries and bundles leave after their time, blobs when unreferenced.

As in the GKV data exchange: a delivery leaves ``/archive`` ``archive_days`` after
acknowledgement and ``/inbox`` ``inbox_days`` after provision when never collected;
acknowledged bundles after ``bundle_days``. A blob is deleted from disk once no
document or bundle refers to it (see ``sweep_blobs`` for why that is safe beside
uploads being committed, on this node or another). The audit log keeps a record of
everything removed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.clock import Clock
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.db.models import Bundle, Delivery, Document, DownloadReceipt
from qprserver.exchange.folders import SUPERSEDED, Folder
from qprserver.storage.base import BlobStore


def _due_deliveries(settings: Settings, now: datetime):  # type: ignore[no-untyped-def]
    jobs = settings.jobs
    return or_(
        and_(
            Delivery.folder == Folder.ARCHIVE,
            Delivery.acknowledged_at < now - timedelta(days=jobs.archive_days),
        ),
        and_(
            Delivery.folder.in_((Folder.INBOX, SUPERSEDED)),
            Delivery.created_at < now - timedelta(days=jobs.inbox_days),
        ),
    )


def _due_bundles(settings: Settings, now: datetime):  # type: ignore[no-untyped-def]
    cut = now - timedelta(days=settings.jobs.bundle_days)
    return or_(
        Bundle.acknowledged_at < cut,
        and_(Bundle.acknowledged_at.is_(None), Bundle.created_at < cut),
    )


async def _orphans(session: AsyncSession) -> list[int]:
    """Documents no delivery points at any more."""
    rows = await session.scalars(
        select(Document.id).where(~exists().where(Delivery.document_id == Document.id))
    )
    return list(rows.all())


async def run_retention(
    db: Database,
    blobs: BlobStore,
    settings: Settings,
    now: datetime,
    clock: Clock,
    *,
    dry_run: bool,
) -> dict[str, object]:
    """Remove what is due; with dry_run only report it (blobs: those unreferenced now).

    ``now`` decides which deliveries and bundles are due (a run may be made as if at
    another time); the age of blobs is measured on ``clock``, the real one in service.
    """
    grace = settings.storage.orphan_grace
    async with db.session() as session:
        deliveries = (
            await session.execute(
                select(Delivery.id, Delivery.recipient_id, Delivery.name, Delivery.folder).where(
                    _due_deliveries(settings, now)
                )
            )
        ).all()
        bundles = (
            await session.execute(select(Bundle.id, Bundle.name).where(_due_bundles(settings, now)))
        ).all()
        report: dict[str, object] = {
            "deliveries": [{"id": d[0], "name": d[2], "folder": d[3]} for d in deliveries],
            "bundles": [{"id": b[0], "name": b[1]} for b in bundles],
        }
        if dry_run:
            report["blobs"] = await sweep_blobs(db, blobs, clock, grace, delete=False)
            return report
        ids = [d[0] for d in deliveries]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            await session.execute(
                delete(DownloadReceipt).where(DownloadReceipt.delivery_id.in_(chunk))
            )
            await session.execute(delete(Delivery).where(Delivery.id.in_(chunk)))
        if bundles:
            await session.execute(delete(Bundle).where(Bundle.id.in_([b[0] for b in bundles])))
        orphans = await _orphans(session)
        for start in range(0, len(orphans), 500):
            await session.execute(
                delete(Document).where(Document.id.in_(orphans[start : start + 500]))
            )
        if ids or bundles or orphans:
            await audit.record(
                session,
                Actor.system(),
                "retention.delete",
                at=now,
                details={
                    "deliveries": ids,
                    "bundles": [b[0] for b in bundles],
                    "documents": orphans,
                },
            )
        report["documents"] = orphans
    report["blobs_deleted"] = await sweep_blobs(db, blobs, clock, grace, delete=True)
    return report


async def referenced_blobs(db: Database) -> set[str]:
    """The hashes of every blob a document or bundle refers to."""
    async with db.read_session() as session:
        referenced = set((await session.scalars(select(Document.sha256).distinct())).all())
        referenced.update((await session.scalars(select(Bundle.sha256).distinct())).all())
    return referenced


async def sweep_blobs(
    db: Database, blobs: BlobStore, clock: Clock, grace: float, *, delete: bool
) -> list[str]:
    """Blobs no document or bundle refers to and stored more than ``grace`` seconds
    before the references were read; deleted unless ``delete`` is False.

    A blob is stored (or, when the same content is there already, touched) before
    the row that refers to it is committed; both set its mtime to that moment. So a
    blob with an mtime older than ``grace`` before the read belongs to an upload
    whose commit, if it ever came, came before the read (as long as no commit takes
    longer than ``grace`` after its blob: uploads commit within seconds, and on
    SQLite within ``database.write_wait``), and the read saw it. Measuring from the
    read, not from the moment a file is looked at, keeps this true however long
    the walk through the store takes. Nodes sharing the data folder are covered
    alike, as long as their clocks differ by much less than ``grace``.
    """
    read_at = clock.now().timestamp()
    referenced = await referenced_blobs(db)
    cutoff = read_at - grace

    def sweep() -> list[str]:
        found = []
        for blob in blobs.iter_blobs():
            if blob.sha256 in referenced or blob.stored_at >= cutoff:
                continue
            # delete_if_older looks at the time once more: a store of the same content
            # since the walk saw it keeps the blob.
            if not delete or blobs.delete_if_older(blob.sha256, cutoff):
                found.append(blob.sha256)
        return found

    return await asyncio.to_thread(sweep)
