"""Retention: deliveries and bundles leave after their time, blobs when unreferenced.

As in the GKV data exchange: a delivery leaves ``/archive`` ``archive_days`` after
acknowledgement and ``/inbox`` ``inbox_days`` after provision when never collected;
acknowledged bundles after ``bundle_days``. A blob is deleted from disk once no
document or bundle refers to it (and it is older than a grace period, so a blob
stored moments ago for an upload still being committed is never taken). The audit
log keeps a record of everything removed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver import audit
from qprserver.audit import Actor
from qprserver.blobstore import FileBlobStore
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.db.models import Bundle, Delivery, Document, DownloadReceipt

BLOB_GRACE_SECONDS = 3600.0


def _due_deliveries(settings: Settings, now: datetime):  # type: ignore[no-untyped-def]
    jobs = settings.jobs
    return or_(
        and_(
            Delivery.folder == "archive",
            Delivery.acknowledged_at < now - timedelta(days=jobs.archive_days),
        ),
        and_(
            Delivery.folder.in_(("inbox", "superseded")),
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
    db: Database, blobs: FileBlobStore, settings: Settings, now: datetime, *, dry_run: bool
) -> dict[str, object]:
    """Remove what is due; with dry_run only report it."""
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
    report["blobs_deleted"] = await collect_blobs(db, blobs, now)
    return report


async def collect_blobs(db: Database, blobs: FileBlobStore, now: datetime) -> list[str]:
    """Delete blobs that no document or bundle refers to."""
    async with db.read_session() as session:
        referenced = set((await session.scalars(select(Document.sha256).distinct())).all())
        referenced.update((await session.scalars(select(Bundle.sha256).distinct())).all())

    def sweep() -> list[str]:
        deleted = []
        for digest in blobs.iter_hashes():
            if digest in referenced:
                continue
            try:
                age = now.timestamp() - blobs.path_for(digest).stat().st_mtime
                if age < BLOB_GRACE_SECONDS:
                    continue
            except FileNotFoundError:
                continue
            if blobs.delete(digest):
                deleted.append(digest)
        return deleted

    return await asyncio.to_thread(sweep)
