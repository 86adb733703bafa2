"""Weekly and final ZIP bundles per recipient (Qb-R § 6 Abs. 4 and 5).

A bundle holds the current version of every document delivered to the recipient
in the period, plus ``MANIFEST.csv``. It is written streaming (1 MiB at a time, so
memory stays flat however large; ZIP64 where sizes need it; PDFs stored, XML
deflated) through a ``BlobWriter`` into the blob store and appears in ``/bundles``
with a ``.sha256`` file.
"""

from __future__ import annotations

import asyncio
import csv
import io
import posixpath
import zipfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from qprserver.accounts.enums import AccountStatus
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.db.models import Account, Bundle, Delivery, Document
from qprserver.exchange.folders import DELIVERY_FOLDERS
from qprserver.notify import emails
from qprserver.notify.outbox import Notifier
from qprserver.observability import events
from qprserver.qb.calendar import final_bundle_year
from qprserver.qb.filename import parse_report_name
from qprserver.storage.base import BlobInfo, BlobStore
from qprserver.storage.streams import StreamFile, chunks

CHUNK = 1024 * 1024
MANIFEST_COLUMNS = (
    "datei",
    "betroffene_ik",
    "dokumentart",
    "version",
    "sha256",
    "groesse",
    "bereitgestellt",
    "absender_ik",
)


@dataclass(frozen=True, slots=True)
class Member:
    """One document inside a bundle."""

    arcname: str
    sha256: str
    size: int
    kind: str
    subject_ik: str | None
    version: int
    delivered_at: datetime
    depositor_ik: str


def week_period(at: datetime, tz: ZoneInfo) -> tuple[str, datetime, datetime]:
    """The ISO week before ``at`` (local time): its key and its UTC start and end."""
    local = at.astimezone(tz) - timedelta(days=7)
    year, week, _ = local.isocalendar()
    start = datetime.fromisocalendar(year, week, 1).replace(tzinfo=tz)
    end = (start.replace(tzinfo=None) + timedelta(days=7)).replace(tzinfo=tz)
    return f"{year}-W{week:02d}", start, end


def _unique_arcnames(members: list[Member]) -> list[Member]:
    seen: set[str] = set()
    result = []
    for m in members:
        name = m.arcname
        if name in seen:
            stem, ext = posixpath.splitext(name)
            name = f"{stem}~{m.sha256[:8]}{ext}"
        seen.add(name)
        result.append(replace(m, arcname=name))
    return result


def manifest_csv(members: list[Member]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    for m in members:
        writer.writerow(
            [
                m.arcname,
                m.subject_ik or "",
                m.kind,
                m.version,
                m.sha256,
                m.size,
                m.delivered_at.isoformat(timespec="seconds"),
                m.depositor_ik,
            ]
        )
    return out.getvalue().encode("utf-8")


def write_zip(blobs: BlobStore, members: list[Member], tz: ZoneInfo) -> BlobInfo:
    """Build the ZIP front to back into a blob stream and store it (blocking)."""
    writer = blobs.begin_stream()
    try:
        with zipfile.ZipFile(StreamFile(writer), "w", allowZip64=True) as archive:
            for m in members:
                stamp = m.delivered_at.astimezone(tz)
                info = zipfile.ZipInfo(m.arcname, date_time=stamp.timetuple()[:6])
                info.compress_type = (
                    zipfile.ZIP_DEFLATED
                    if m.arcname.lower().endswith(".xml")
                    else zipfile.ZIP_STORED
                )
                info.file_size = m.size
                source = blobs.open_reader(m.sha256)
                try:
                    with archive.open(
                        info, "w", force_zip64=m.size >= zipfile.ZIP64_LIMIT
                    ) as target:
                        for chunk in chunks(source, CHUNK):
                            target.write(chunk)
                finally:
                    source.close()
            archive.writestr(
                "MANIFEST.csv", manifest_csv(members), compress_type=zipfile.ZIP_DEFLATED
            )
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


async def _members(
    db: Database,
    recipient: Account,
    start: datetime | None,
    end: datetime | None,
    kind: str | None,
    year: int | None = None,
) -> list[Member]:
    depositor = Account.__table__.alias("depositor")
    query = (
        select(
            Delivery.name,
            Document.sha256,
            Document.size,
            Document.kind,
            Document.subject_ik,
            Document.version,
            Delivery.created_at,
            depositor.c.ik,
        )
        .join(Document, Delivery.document_id == Document.id)
        .join(depositor, Document.depositor_id == depositor.c.id)
        .where(
            Delivery.recipient_id == recipient.id,
            Delivery.folder.in_(DELIVERY_FOLDERS),
            Document.current.is_(True),
        )
        .order_by(Delivery.id)
    )
    if start is not None and end is not None:
        query = query.where(Delivery.created_at >= start, Delivery.created_at < end)
    if kind is not None:
        query = query.where(Document.kind == kind)
    async with db.read_session() as session:
        rows = (await session.execute(query)).all()
    if year is not None:
        rows = [row for row in rows if _report_year(row[0]) == year]
    return _unique_arcnames([Member(*row) for row in rows])


def _report_year(filename: str) -> int | None:
    name = parse_report_name(filename)
    return None if name is None else name.year


async def _store_bundle(
    db: Database,
    blobs: BlobStore,
    notifier: Notifier,
    settings: Settings,
    recipient: Account,
    *,
    kind: str,
    period: str,
    name: str,
    members: list[Member],
    now: datetime,
) -> Bundle | None:
    tz = ZoneInfo(settings.jobs.timezone)
    blob = await asyncio.to_thread(write_zip, blobs, members, tz)
    try:
        async with db.session() as session:
            bundle = Bundle(
                recipient_id=recipient.id,
                kind=kind,
                period=period,
                name=name,
                sha256=blob.sha256,
                size=blob.size,
                count=len(members),
                created_at=now,
            )
            session.add(bundle)
            await session.flush()
            await notifier.queue(
                session,
                key=f"bundle:{bundle.id}",
                email=emails.bundle_ready(
                    recipient, name, count=len(members), size=blob.size, sha256=blob.sha256
                ),
                account=recipient,
                now=now,
            )
    except IntegrityError:
        return None  # built by another node meanwhile; the unused blob is collected later
    events.bundle_built(
        recipient.ik,
        bundle=name,
        kind=kind,
        period=period,
        documents=len(members),
        size=blob.size,
        sha256=blob.sha256,
    )
    return bundle


async def _bundle_recipients(db: Database) -> list[Account]:
    async with db.read_session() as session:
        return list(
            (
                await session.scalars(
                    select(Account)
                    .where(Account.bundles.is_(True), Account.status == AccountStatus.ACTIVE)
                    .order_by(Account.ik)
                )
            ).all()
        )


async def _exists(db: Database, recipient: Account, kind: str, period: str) -> bool:
    async with db.read_session() as session:
        found = await session.scalar(
            select(Bundle.id).where(
                Bundle.recipient_id == recipient.id, Bundle.kind == kind, Bundle.period == period
            )
        )
    return found is not None


async def build_weekly(
    db: Database, blobs: BlobStore, notifier: Notifier, settings: Settings, now: datetime
) -> dict[str, object]:
    """One bundle per recipient with bundles enabled for the ISO week before ``now``."""
    period, start, end = week_period(now, ZoneInfo(settings.jobs.timezone))
    built: list[str] = []
    for recipient in await _bundle_recipients(db):
        if await _exists(db, recipient, "weekly", period):
            continue
        members = await _members(db, recipient, start, end, None)
        if not members:
            continue  # an empty week yields no bundle
        name = f"qpr-{recipient.ik}-{period}.zip"
        if await _store_bundle(
            db,
            blobs,
            notifier,
            settings,
            recipient,
            kind="weekly",
            period=period,
            name=name,
            members=members,
            now=now,
        ):
            built.append(name)
    return {"period": period, "bundles": built}


async def build_final(
    db: Database, blobs: BlobStore, notifier: Notifier, settings: Settings, now: datetime
) -> dict[str, object]:
    """After the replacement window of a report year (its calendar), every current
    document of the kind for that year, once per recipient (Qb-R § 6 Abs. 5)."""
    jobs = settings.jobs
    year = final_bundle_year(settings.qb, now)
    if year is None:
        return {"skipped": "no report year past its replacement window"}
    kind = f"final:{jobs.final_bundle_kind}"
    period = str(year)
    built: list[str] = []
    for recipient in await _bundle_recipients(db):
        if await _exists(db, recipient, kind, period):
            continue
        members = await _members(db, recipient, None, None, jobs.final_bundle_kind, year)
        if not members:
            continue
        name = f"qpr-{recipient.ik}-{jobs.final_bundle_kind}-final-{period}.zip"
        if await _store_bundle(
            db,
            blobs,
            notifier,
            settings,
            recipient,
            kind=kind,
            period=period,
            name=name,
            members=members,
            now=now,
        ):
            built.append(name)
    return {"period": period, "bundles": built}
