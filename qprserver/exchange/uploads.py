"""Turning a complete upload into a document, or into a rejection with a protocol.

The SFTP edge hands over the ``BlobWriter`` of a finished upload; this module checks
it (name, size, quota, content read through ``open_written``, routing), stores it
(``finish``), and writes the document, its deliveries, the protocol and the audit
events in one transaction. A rejected upload leaves no
document and no blob, only its protocol.

Its lines (over 400) belong together for now: ``UploadService.complete`` is one
transaction whose steps (checks, unchanged detection, versions, deliveries, protocol,
mails, audit) share its session and its locks; the protocol and mail helpers below it
are its private steps. The seam for a split is the protocol writing (``_protocol``,
``_notify``, ``reject``), which the web portal's upload path will share.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.db.models import Account, Delivery, Document, Outcome, UploadProtocol
from qprserver.errors import QuotaExceeded, Rejected
from qprserver.exchange import mailbox, routing
from qprserver.exchange.content import ContentRejected, XmlTree, check_content
from qprserver.exchange.folders import SUPERSEDED, Folder
from qprserver.exchange.names import name_problem, nfc
from qprserver.notify import emails
from qprserver.notify.emails import Email
from qprserver.notify.outbox import Notifier
from qprserver.observability import events
from qprserver.qb import accounts as qb_accounts
from qprserver.qb import c1
from qprserver.qb import registrations as qb_registrations
from qprserver.qb.engine import QbResult, validate_upload
from qprserver.qb.filename import parse_report_name
from qprserver.storage.base import BlobWriter

MAX_NAME = 255
QUALITY_REPORT = "qualitaetsbericht"


class ReportRejected(Rejected):
    """A quality report failed its acceptance checks; the protocol says why."""

    def __init__(self, result: QbResult) -> None:
        super().__init__(result.reason)
        self.result = result


@dataclass(frozen=True, slots=True)
class Accepted:
    """The outcome of an accepted upload."""

    document_id: int
    version: int
    sha256: str
    size: int
    recipients: tuple[str, ...]
    protocol_name: str
    unchanged: bool = False  # the same bytes as the current version: no new version


def validate_name(name: str) -> None:
    """Refuse names that are no plain file name (``filenames.name_problem``)."""
    if not name or name in (".", "..") or "/" in name:
        raise Rejected(f"ungültiger Dateiname {name!r}")
    if len(name.encode("utf-8")) > MAX_NAME:
        raise Rejected(f"Dateiname länger als {MAX_NAME} Bytes")
    problem = name_problem(name)
    if problem is not None:
        raise Rejected(problem)


def _protocol_name(now: datetime, protocol_id: int, outcome: str, name: str) -> str:
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}_{protocol_id:07d}_{outcome}_{name}"
    return base[:240] + ".json"


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
            with writer.open_written() as written:
                try:
                    # The one parse of an XML upload: its tree goes on to the report checks.
                    tree = await asyncio.to_thread(
                        check_content,
                        written,
                        _checked_name(name, content),
                        max_xml_bytes=self.settings.qb.max_xml_bytes,
                    )
                except ContentRejected as exc:
                    raise Rejected(str(exc)) from None
                report = await self._check_report(
                    classification, written, name, depositor, now, tree
                )
            async with self.db.read_session() as session:
                recipients = await routing.recipients_for(
                    session, classification, direct_ik=direct_ik, depositor=depositor
                )
                await self._check_quota(session, depositor, name, size)
            blob = await asyncio.to_thread(writer.finish)
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
        async with self.db.session() as session:
            same = await self._unchanged_version(
                session, depositor, name, direct_ik, blob.sha256, recipients
            )
            if same is not None:
                unchanged = await self._record_unchanged(
                    session, depositor, actor, now, shown, same, client_mtime
                )
                # Told once the transaction is about to commit, as the others are after it.
                events.upload(
                    "unchanged",
                    account=depositor.login,
                    name=shown,
                    kind=same.kind,
                    size=same.size,
                    sha256=same.sha256,
                    seconds=time.monotonic() - started,
                    document=same.id,
                    version=same.version,
                )
                return unchanged
            version = 1 + int(
                await session.scalar(
                    select(func.coalesce(func.max(Document.version), 0)).where(
                        Document.depositor_id == depositor.id, Document.name == name
                    )
                )
                or 0
            )
            previous = (
                await session.scalars(
                    select(Document.id).where(
                        Document.depositor_id == depositor.id,
                        Document.name == name,
                        Document.current.is_(True),
                    )
                )
            ).all()
            if previous:
                await session.execute(
                    update(Document).where(Document.id.in_(previous)).values(current=False)
                )
                # Recipients see only the latest version: earlier ones leave the inbox.
                await session.execute(
                    update(Delivery)
                    .where(Delivery.document_id.in_(previous), Delivery.folder == Folder.INBOX)
                    .values(folder=SUPERSEDED)
                )
            document = Document(
                depositor_id=depositor.id,
                name=name,
                kind=kind,
                subject_ik=subject,
                version=version,
                current=True,
                sha256=blob.sha256,
                size=blob.size,
                uploaded_at=now,
                direct_ik=direct_ik,
                client_mtime=client_mtime,
            )
            session.add(document)
            await session.flush()
            if kind == c1.C1_KIND and report is not None:
                await c1.record(session, document, report, now)
            stem, ext = posixpath.splitext(name)
            for recipient in recipients:
                # Another depositor's document of the same name keeps its name.
                shown_name = await mailbox.unique_name(
                    session,
                    recipient,
                    Folder.INBOX,
                    name,
                    f"{stem}~{depositor.ik}{ext}",
                    f"{stem}~{document.id}{ext}",
                )
                delivery = Delivery(
                    document_id=document.id,
                    recipient_id=recipient.id,
                    name=shown_name,
                    folder=Folder.INBOX,
                    kind=kind,
                    created_at=now,
                )
                session.add(delivery)
            body = {
                "ergebnis": "angenommen",
                "datei": shown,
                "dokument_id": document.id,
                "version": version,
                "dokumentart": kind,
                "betroffene_ik": subject,
                "sha256": blob.sha256,
                "groesse": blob.size,
                "empfaenger_anzahl": len(recipients),
                "zeitpunkt": now.isoformat(),
            }
            if report is not None:
                body["pruefung"] = report.protocol
            protocol = await self._protocol(
                session, depositor, now, shown, Outcome.ACCEPTED, body, document.id
            )
            await self._notify(
                session,
                depositor,
                now,
                protocol,
                emails.upload_receipt(
                    protocol, depositor, received_at=now, size=blob.size, sha256=blob.sha256
                ),
                emails.upload_result(
                    protocol,
                    findings=emails.report_findings(report.findings) if report is not None else [],
                    document_id=document.id,
                    version=version,
                    sha256=blob.sha256,
                    recipients=len(recipients),
                ),
            )
            await audit.record(
                session,
                actor,
                "upload.accept",
                at=now,
                target=depositor.login,
                details={
                    "name": shown,
                    "document": document.id,
                    "version": version,
                    "sha256": blob.sha256,
                    "size": blob.size,
                    "recipients": [r.ik for r in recipients],
                },
            )
        events.upload(
            "accepted",
            account=depositor.login,
            name=shown,
            kind=kind,
            size=blob.size,
            sha256=blob.sha256,
            seconds=time.monotonic() - started,
            recipients=[r.ik for r in recipients],
            document=document.id,
            version=version,
        )
        return Accepted(
            document.id,
            version,
            blob.sha256,
            blob.size,
            tuple(r.ik for r in recipients),
            protocol.file_name,
        )

    async def _unchanged_version(
        self,
        session: AsyncSession,
        depositor: Account,
        name: str,
        direct_ik: str | None,
        sha256: str,
        recipients: list[Account],
    ) -> Document | None:
        """The current version when an upload repeats it: same bytes, no one new to reach."""
        current = await session.scalar(
            select(Document).where(
                Document.depositor_id == depositor.id,
                Document.name == name,
                Document.current.is_(True),
            )
        )
        if current is None or current.sha256 != sha256 or current.direct_ik != direct_ik:
            return None
        delivered = set(
            (
                await session.scalars(
                    select(Delivery.recipient_id).where(Delivery.document_id == current.id)
                )
            ).all()
        )
        # A route added since, or another recipient addressed: a new version reaches it.
        if not {r.id for r in recipients} <= delivered:
            return None
        return current

    async def _record_unchanged(
        self,
        session: AsyncSession,
        depositor: Account,
        actor: Actor,
        now: datetime,
        shown: str,
        document: Document,
        client_mtime: datetime | None,
    ) -> Accepted:
        if client_mtime is not None:
            document.client_mtime = client_mtime
        body: dict[str, object] = {
            "ergebnis": "unverändert",
            "hinweis": (
                f"Version {document.version} mit denselben Daten liegt bereits vor; "
                "keine neue Version, keine Benachrichtigung"
            ),
            "datei": shown,
            "dokument_id": document.id,
            "version": document.version,
            "dokumentart": document.kind,
            "betroffene_ik": document.subject_ik,
            "sha256": document.sha256,
            "groesse": document.size,
            "zeitpunkt": now.isoformat(),
        }
        protocol = await self._protocol(
            session, depositor, now, shown, Outcome.UNCHANGED, body, document.id
        )
        await audit.record(
            session,
            actor,
            "upload.unchanged",
            at=now,
            target=depositor.login,
            details={
                "name": shown,
                "document": document.id,
                "version": document.version,
                "sha256": document.sha256,
                "size": document.size,
            },
        )
        return Accepted(
            document.id,
            document.version,
            document.sha256,
            document.size,
            (),
            protocol.file_name,
            unchanged=True,
        )

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

    async def _check_quota(
        self, session: AsyncSession, depositor: Account, name: str, size: int
    ) -> None:
        # The current version of the same name is replaced (or repeated), not added to.
        used = int(
            await session.scalar(
                select(func.coalesce(func.sum(Document.size), 0)).where(
                    Document.depositor_id == depositor.id,
                    Document.current.is_(True),
                    Document.name != name,
                )
            )
            or 0
        )
        quota = self.settings.storage.depositor_quota_bytes
        if used + size > quota:
            raise QuotaExceeded(f"Kontingent erschöpft: {used} von {quota} Bytes belegt")

    async def _protocol(
        self,
        session: AsyncSession,
        depositor: Account,
        now: datetime,
        shown: str,
        outcome: Outcome,
        body: dict[str, object],
        document_id: int | None,
    ) -> UploadProtocol:
        protocol = UploadProtocol(
            depositor_id=depositor.id,
            file_name="",
            upload_name=shown,
            outcome=outcome.value,
            document_id=document_id,
            body=mailbox.protocol_json(body),
            created_at=now,
        )
        session.add(protocol)
        await session.flush()
        protocol.file_name = _protocol_name(
            now, protocol.id, outcome.value, shown.replace("/", "_")
        )
        return protocol

    async def _notify(
        self,
        session: AsyncSession,
        depositor: Account,
        now: datetime,
        protocol: UploadProtocol,
        receipt: Email,
        result: Email,
    ) -> None:
        """Queue the receipt (Eingangsbestätigung) and the result mail of one upload."""
        await self.notifier.queue(
            session, key=f"upload:{protocol.id}:receipt", email=receipt, account=depositor, now=now
        )
        await self.notifier.queue(
            session, key=f"upload:{protocol.id}:result", email=result, account=depositor, now=now
        )

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
        async with self.db.session() as session:
            body: dict[str, object] = {
                # A report whose check could not run is not accepted, but not faulted.
                "ergebnis": report.protocol["ergebnis"] if report is not None else "abgelehnt",
                "datei": shown,
                "gruende": [reason],
                "sha256": sha256 or None,
                "groesse": size,
                "zeitpunkt": now.isoformat(),
            }
            if report is not None:
                body["pruefung"] = report.protocol
            protocol = await self._protocol(
                session, depositor, now, shown, Outcome.REJECTED, body, None
            )
            await self._notify(
                session,
                depositor,
                now,
                protocol,
                emails.upload_receipt(
                    protocol, depositor, received_at=now, size=size, sha256=sha256
                ),
                emails.upload_result(
                    protocol,
                    findings=emails.report_findings(report.findings)
                    if report is not None
                    else [emails.finding(reason)],
                    unavailable=report is not None and report.unavailable,
                ),
            )
            await audit.record(
                session,
                actor,
                "upload.reject",
                at=now,
                target=depositor.login,
                details={"name": shown, "reason": reason, "size": size, "sha256": sha256},
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
