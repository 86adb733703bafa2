"""Turning a complete upload into a document, or into a rejection with a protocol.

The SFTP edge and the web portal hand over the ``BlobWriter`` of a finished upload;
``UploadService.complete`` checks it (name, size, content read through
``open_written``, the report checks, routing, quota), stores it (``finish``), and
has ``acceptance`` write the document, its deliveries, the protocol, the mails and
the audit event in one transaction. A rejected upload leaves no document and no
blob, only its protocol.

The client's close waits on all of it, so each step takes the shortest way there
is: a PDF's check (its head and tail) runs right here, the routing and quota reads
go through ``Database.quick_read`` (on SQLite no thread at all), the bytes are
fsynced and the transaction written in one trip to a worker thread
(``Database.write_after``; two on PostgreSQL), and the upload's log event is
written after the close is answered.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from functools import partial
from typing import BinaryIO

from sqlalchemy import Connection, bindparam, func, select

from qprserver.audit.chain import Actor
from qprserver.config import Settings
from qprserver.db import prepared
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account, DepositorUsage, Document
from qprserver.db.prepared import Prepared
from qprserver.errors import QuotaExceeded, Rejected
from qprserver.exchange import acceptance, routing
from qprserver.exchange.acceptance import Accepted
from qprserver.exchange.content import ContentRejected, XmlTree, check_content, reads_little
from qprserver.exchange.names import name_problem, nfc
from qprserver.notify.outbox import Notifier
from qprserver.observability import events
from qprserver.qb import accounts as qb_accounts
from qprserver.qb import c1
from qprserver.qb import registrations as qb_registrations
from qprserver.qb.engine import QbResult, validate_upload
from qprserver.qb.filename import parse_report_name
from qprserver.storage.base import BlobInfo, BlobWriter

__all__ = ["Accepted", "ReportRejected", "UploadService", "validate_name"]

MAX_NAME = 255
# The bytes of a depositor's current documents but those of one name (the quota):
# the running total the triggers on ``documents`` keep (``db.usage``) less the
# current version of that name, two indexed look-ups however many documents it holds.
_USED = Prepared(
    select(
        func.coalesce(
            select(DepositorUsage.used)
            .where(DepositorUsage.depositor_id == bindparam("depositor"))
            .scalar_subquery(),
            0,
        )
        - func.coalesce(
            select(func.sum(Document.size))
            .where(
                Document.depositor_id == bindparam("depositor"),
                Document.name == bindparam("name"),
                Document.current.is_(True),
            )
            .scalar_subquery(),
            0,
        )
    )
)
QUALITY_REPORT = "qualitaetsbericht"


class ReportRejected(Rejected):
    """A quality report failed its acceptance checks; the protocol says why."""

    def __init__(self, result: QbResult) -> None:
        super().__init__(result.reason)
        self.result = result


def validate_name(name: str) -> None:
    """Refuse names that are no plain file name (``filenames.name_problem``)."""
    if not name or name in (".", "..") or "/" in name:
        raise Rejected(f"ungültiger Dateiname {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME:
        raise Rejected(f"Dateiname länger als {MAX_NAME} Bytes")
    problem = name_problem(name)
    if problem is not None:
        raise Rejected(problem)


class UploadService:
    """Completes uploads against one database, blob store and configuration."""

    def __init__(self, db: Database, settings: Settings, notifier: Notifier) -> None:
        self.db = db
        self.settings = settings
        self.notifier = notifier

    async def complete(
        self,
        depositor: Account,
        actor: Actor,
        now: datetime,
        *,
        name: str,
        direct_ik: str | None,
        writer: BlobWriter,
        client_mtime: datetime | None = None,
        started: float | None = None,
    ) -> Accepted:
        """Check and store a finished upload; Rejected (with a protocol written) on refusal.

        The same name with the same bytes as the depositor's current version, reaching
        no one new, makes no new version: the protocol says "unverändert", and no
        mail goes out, so a retried upload is harmless. ``started``: when the
        transfer began (``time.monotonic``), for the event's ``elapsed_ms``.
        """
        started = time.monotonic() if started is None else started
        name = nfc(name)
        shown = f"{direct_ik}/{name}" if direct_ik else name
        try:
            validate_name(name)
            classification = routing.classify(name, self.settings.kinds)
            # A report registration's account delivers its own quality report only.
            is_report = classification is not None and classification.kind == QUALITY_REPORT
            report_name = parse_report_name(name) if is_report and not direct_ik else None
            if (refusal := qb_accounts.delivery_refusal(depositor, report_name)) is not None:
                raise Rejected(refusal)
            content = (
                classification.content if classification else routing.content_type_from_name(name)
            )
            size = writer.size
            limit = self.settings.storage.max_upload_bytes
            if size > limit:
                raise QuotaExceeded(f"Datei größer als die erlaubten {limit} Bytes")
            checked_name = _checked_name(name, content)
            with writer.open_written() as written:
                try:
                    if reads_little(checked_name):
                        # A few bytes of a file just written: cheaper here than a thread.
                        tree = check_content(
                            written, checked_name, max_xml_bytes=self.settings.qb.max_xml_bytes
                        )
                    else:
                        # The one parse of an XML upload: its tree goes on to the report
                        # checks.
                        tree = await asyncio.to_thread(
                            check_content,
                            written,
                            checked_name,
                            max_xml_bytes=self.settings.qb.max_xml_bytes,
                        )
                except ContentRejected as exc:
                    raise Rejected(str(exc)) from None
                report = await self._check_report(
                    classification, written, name, depositor, now, tree
                )

            async def destination(reads: Reads) -> list[routing.Recipient]:
                found = await routing.recipients_for(
                    reads, classification, direct_ik=direct_ik, depositor=depositor
                )
                await self._check_quota(reads, depositor, name, size)
                return found

            recipients = await self.db.quick_read(destination)
        except Rejected as exc:
            size = writer.size
            sha256 = await asyncio.to_thread(_digest_or_empty, writer)
            writer.abort()
            result = exc.result if isinstance(exc, ReportRejected) else None
            await self.reject(
                depositor,
                actor,
                now,
                shown=shown,
                reason=str(exc),
                size=size,
                sha256=sha256,
                report=result,
                started=started,
            )
            raise
        except BaseException:
            writer.abort()  # whatever went wrong, no half-checked upload stays behind
            raise
        kind = classification.kind if classification else routing.DIRECT_KIND
        subject = (
            classification.subject_ik.value
            if classification and classification.subject_ik
            else None
        )
        upload = acceptance.Upload(depositor, actor, now, shown, self.notifier, self.db.audit_key)

        def accept(conn: Connection, blob: BlobInfo) -> Accepted:
            checked = acceptance.Checked(
                name, direct_ik, kind, subject, blob, recipients, report, client_mtime
            )
            return acceptance.accept(conn, upload, checked)

        try:
            # The bytes are fsynced and under their hash before the transaction that
            # refers to them begins (on SQLite in the same trip to a worker thread).
            accepted = await self.db.write_after(writer.finish, accept)
        except BaseException:
            writer.abort()  # nothing after a failed finish; a no-op after a finished one
            raise
        # The event is logged in the loop's next turn, with this task's context (session,
        # request): after the SFTP edge has answered the close, which waits on none of it.
        asyncio.get_running_loop().call_soon(
            partial(
                events.upload,
                "unchanged" if accepted.unchanged else "accepted",
                account=depositor.login,
                name=shown,
                kind=accepted.kind,
                size=accepted.size,
                sha256=accepted.sha256,
                seconds=time.monotonic() - started,
                recipients=accepted.recipients,
                document=accepted.document_id,
                version=accepted.version,
            )
        )
        return accepted

    async def _check_report(
        self,
        classification: routing.Classification | None,
        written: BinaryIO,
        name: str,
        depositor: Account,
        now: datetime,
        tree: XmlTree | None,
    ) -> QbResult | None:
        """The acceptance checks of a hospital quality report (ReportRejected on ``hart``)
        and of part C-1 from a QS-Stelle (Rejected with the reason, ReportRejected on a
        schema error)."""
        if classification is not None and classification.kind == c1.C1_KIND:
            async with self.db.read_session() as session:
                reason = await c1.refusal(
                    session, self.settings.qb, depositor.roles, name, tree, now
                )
            if reason is not None:
                raise Rejected(reason)
            checked = await asyncio.to_thread(c1.check, name, tree, self.settings.qb)
            if not checked.accepted:
                raise ReportRejected(checked)
            return checked
        if classification is None or classification.kind != QUALITY_REPORT:
            return None
        report = parse_report_name(name)
        registered = None
        if report is not None:
            async with self.db.read_session() as session:
                registered = await qb_registrations.confirmed(
                    session, report.year, report.ik, report.site
                )
        result = await validate_upload(
            written, name, depositor.ik, self.settings.qb, now, tree=tree, registered=registered
        )
        if not result.accepted:
            raise ReportRejected(result)
        return result

    async def _check_quota(self, reads: Reads, depositor: Account, name: str, size: int) -> None:
        # The current version of the same name is replaced (or repeated), not added to.
        found = await prepared.rows(reads, _USED, {"depositor": depositor.id, "name": name})
        used = int(found[0][0] or 0) if found else 0
        quota = self.settings.storage.depositor_quota_bytes
        if used + size > quota:
            raise QuotaExceeded(f"Kontingent erschöpft: {used} von {quota} Bytes belegt")

    async def reject(
        self,
        depositor: Account,
        actor: Actor,
        now: datetime,
        *,
        shown: str,
        reason: str,
        size: int = 0,
        sha256: str = "",
        report: QbResult | None = None,
        started: float | None = None,
    ) -> None:
        """Record a refused upload: its protocol (with size and SHA-256) and an audit event.

        ``started``: when the transfer began (``time.monotonic``).
        """
        started = time.monotonic() if started is None else started
        upload = acceptance.Upload(depositor, actor, now, shown, self.notifier, self.db.audit_key)
        await self.db.write(
            lambda conn: acceptance.reject(
                conn, upload, reason=reason, size=size, sha256=sha256, report=report
            )
        )
        events.upload(
            "rejected",
            account=depositor.login,
            name=shown,
            kind=_kind_label(shown, self.settings),
            size=size,
            sha256=sha256,
            seconds=time.monotonic() - started,
            reasons=[reason],
        )


def _kind_label(shown: str, settings: Settings) -> str:
    """The kind a refused upload counts under: the kind its name matches, ``direkt``
    for one addressed to a recipient, else ``unknown``."""
    direct, _, name = shown.rpartition("/")
    try:
        found = routing.classify(nfc(name), settings.kinds)
    except Rejected:
        found = None  # a kind's pattern, but no valid IK: still unknown
    if found is not None:
        return found.kind
    return routing.DIRECT_KIND if direct else "unknown"


def _digest_or_empty(writer: BlobWriter) -> str:
    """The SHA-256 of what a refused upload received, for its protocol ("" if unreadable)."""
    try:
        return writer.digest()
    except (OSError, ValueError):
        return ""


def _checked_name(name: str, content: str) -> str:
    # The configured kind decides the check; an extension alone decides for direct uploads.
    if content == "any":
        return name
    return name if name.lower().endswith("." + content) else f"{name}.{content}"
