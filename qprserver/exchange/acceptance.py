"""What a checked upload leaves in the database: one transaction, one trip.

``UploadService.complete`` checks an upload and stores its bytes; then it hands
``accept`` (or ``reject``) to ``Database.write``, which runs it whole on one
synchronous connection in one transaction. Each writes the upload's outcome: the
document (or the same version again, ``unverändert``), its deliveries, the
protocol, the receipt and result mails and the audit event. The statements are few
and plain (Core, no ORM session; one look-up of the name's versions, one of the
names taken in the recipients' inboxes, no savepoints) because the client's close
waits on them: on SQLite the whole transaction is one hop to a worker thread, on
PostgreSQL one round trip per statement.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.models import Account, Delivery, Document, Outcome, UploadProtocol
from qprserver.exchange import mailbox
from qprserver.exchange.folders import SUPERSEDED, Folder
from qprserver.exchange.routing import Recipient
from qprserver.notify import emails
from qprserver.notify.emails import Email
from qprserver.notify.outbox import Notifier, Queued
from qprserver.qb import c1
from qprserver.qb.engine import QbResult
from qprserver.storage.base import BlobInfo

_PROTOCOLS = cast(Table, UploadProtocol.__table__)
# Core inserts, built once: no ORM unit of work for rows written once and never
# changed in this transaction.
_NEW_DOCUMENT = insert(cast(Table, Document.__table__))
_NEW_DELIVERY = insert(cast(Table, Delivery.__table__))
_NEW_PROTOCOL = insert(_PROTOCOLS)

# Every version of one name of one depositor: the newest number, the current one.
_VERSIONS = select(
    Document.id, Document.version, Document.current, Document.sha256, Document.direct_ik
).where(Document.depositor_id == bindparam("depositor"), Document.name == bindparam("name"))
_DELIVERED = select(Delivery.recipient_id).where(Delivery.document_id == bindparam("document"))
_DOCUMENT = select(
    Document.id,
    Document.version,
    Document.kind,
    Document.subject_ik,
    Document.sha256,
    Document.size,
).where(Document.id == bindparam("document"))
_CLIENT_MTIME = (
    update(cast(Table, Document.__table__))
    .where(Document.id == bindparam("document"))
    .values(client_mtime=bindparam("mtime"))
)
_PROTOCOL_NAME = (
    update(_PROTOCOLS)
    .where(_PROTOCOLS.c.id == bindparam("protocol"))
    .values(file_name=bindparam("new_name"))
)


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
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Upload:
    """Who uploaded, when, and the name shown in protocols (``<IK>/name`` when addressed)."""

    depositor: Account
    actor: Actor
    now: datetime
    shown: str
    notifier: Notifier
    audit_key: bytes | None  # the instance's audit key (``Database.audit_key``)


@dataclass(frozen=True, slots=True)
class Checked:
    """What the checks found out about an upload that passed them."""

    name: str
    direct_ik: str | None
    kind: str
    subject_ik: str | None
    blob: BlobInfo
    recipients: Sequence[Recipient]
    report: QbResult | None
    client_mtime: datetime | None


def accept(conn: Connection, upload: Upload, checked: Checked) -> Accepted:
    """Write an accepted upload: a new version with its deliveries, or, when it repeats
    the current version and reaches no one new, only a protocol saying so."""
    depositor, now, blob = upload.depositor, upload.now, checked.blob
    versions = conn.execute(_VERSIONS, {"depositor": depositor.id, "name": checked.name}).all()
    current = [row for row in versions if row.current]
    if _repeats(conn, current, checked):
        return _unchanged(conn, upload, current[0].id, checked.client_mtime)
    version = 1 + max((row.version for row in versions), default=0)
    previous = [row.id for row in current]
    if previous:
        conn.execute(update(Document).where(Document.id.in_(previous)).values(current=False))
        # Recipients see only the latest version: earlier ones leave the inbox.
        conn.execute(
            update(Delivery)
            .where(Delivery.document_id.in_(previous), Delivery.folder == Folder.INBOX)
            .values(folder=SUPERSEDED)
        )
    inserted = conn.execute(
        _NEW_DOCUMENT,
        {
            "depositor_id": depositor.id,
            "name": checked.name,
            "kind": checked.kind,
            "subject_ik": checked.subject_ik,
            "version": version,
            "current": True,
            "sha256": blob.sha256,
            "size": blob.size,
            "uploaded_at": now,
            "direct_ik": checked.direct_ik,
            "client_mtime": checked.client_mtime,
        },
    ).inserted_primary_key
    assert inserted is not None  # a single-row insert always reports its key
    document_id = int(inserted[0])
    if checked.kind == c1.C1_KIND and checked.report is not None:
        c1.record(conn, document_id, checked.report, now)
    recipients = checked.recipients
    if recipients:
        stem, ext = posixpath.splitext(checked.name)
        # Another depositor's document of the same name keeps its name.
        names = mailbox.free_names(
            conn,
            [r.id for r in recipients],
            Folder.INBOX,
            checked.name,
            f"{stem}~{depositor.ik}{ext}",
            f"{stem}~{document_id}{ext}",
        )
        conn.execute(
            _NEW_DELIVERY,
            [
                {
                    "document_id": document_id,
                    "recipient_id": r.id,
                    "name": names[r.id],
                    "folder": Folder.INBOX,
                    "kind": checked.kind,
                    "created_at": now,
                }
                for r in recipients
            ],
        )
    body: dict[str, object] = {
        "ergebnis": "angenommen",
        "datei": upload.shown,
        "dokument_id": document_id,
        "version": version,
        "dokumentart": checked.kind,
        "betroffene_ik": checked.subject_ik,
        "sha256": blob.sha256,
        "groesse": blob.size,
        "empfaenger_anzahl": len(recipients),
        "zeitpunkt": now.isoformat(),
    }
    report = checked.report
    if report is not None:
        body["pruefung"] = report.protocol
    protocol = _protocol(conn, upload, Outcome.ACCEPTED, body, document_id)
    _mails(
        conn,
        upload,
        protocol,
        emails.upload_receipt(
            protocol, depositor, received_at=now, size=blob.size, sha256=blob.sha256
        ),
        emails.upload_result(
            protocol,
            findings=emails.report_findings(report.findings) if report is not None else [],
            document_id=document_id,
            version=version,
            sha256=blob.sha256,
            recipients=len(recipients),
        ),
    )
    _audit(
        conn,
        upload,
        "upload.accept",
        {
            "name": upload.shown,
            "document": document_id,
            "version": version,
            "sha256": blob.sha256,
            "size": blob.size,
            "recipients": [r.ik for r in recipients],
        },
    )
    return Accepted(
        document_id,
        version,
        blob.sha256,
        blob.size,
        tuple(r.ik for r in recipients),
        protocol.file_name,
        kind=checked.kind,
    )


def _repeats(conn: Connection, current: Sequence[Any], checked: Checked) -> bool:
    """True when the upload is the current version again: the same bytes, addressed
    the same way, and no recipient it reaches lacks that version (a route added
    since, or another recipient addressed, makes a new version that reaches it)."""
    if len(current) != 1:
        return False
    row = current[0]
    if row.sha256 != checked.blob.sha256 or row.direct_ik != checked.direct_ik:
        return False
    delivered = set(conn.execute(_DELIVERED, {"document": row.id}).scalars())
    return {r.id for r in checked.recipients} <= delivered


def _unchanged(
    conn: Connection, upload: Upload, document_id: int, client_mtime: datetime | None
) -> Accepted:
    document = conn.execute(_DOCUMENT, {"document": document_id}).one()
    if client_mtime is not None:
        conn.execute(_CLIENT_MTIME, {"document": document_id, "mtime": client_mtime})
    body: dict[str, object] = {
        "ergebnis": "unverändert",
        "hinweis": (
            f"Version {document.version} mit denselben Daten liegt bereits vor; "
            "keine neue Version, keine Benachrichtigung"
        ),
        "datei": upload.shown,
        "dokument_id": document.id,
        "version": document.version,
        "dokumentart": document.kind,
        "betroffene_ik": document.subject_ik,
        "sha256": document.sha256,
        "groesse": document.size,
        "zeitpunkt": upload.now.isoformat(),
    }
    protocol = _protocol(conn, upload, Outcome.UNCHANGED, body, document.id)
    _audit(
        conn,
        upload,
        "upload.unchanged",
        {
            "name": upload.shown,
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
        kind=document.kind,
    )


def reject(
    conn: Connection,
    upload: Upload,
    *,
    reason: str,
    size: int,
    sha256: str,
    report: QbResult | None,
) -> None:
    """Write a refused upload: its protocol (with size and SHA-256), the receipt and
    result mails, and the audit event."""
    body: dict[str, object] = {
        # A report whose check could not run is not accepted, but not faulted.
        "ergebnis": report.protocol["ergebnis"] if report is not None else "abgelehnt",
        "datei": upload.shown,
        "gruende": [reason],
        "sha256": sha256 or None,
        "groesse": size,
        "zeitpunkt": upload.now.isoformat(),
    }
    if report is not None:
        body["pruefung"] = report.protocol
    protocol = _protocol(conn, upload, Outcome.REJECTED, body, None)
    _mails(
        conn,
        upload,
        protocol,
        emails.upload_receipt(
            protocol, upload.depositor, received_at=upload.now, size=size, sha256=sha256
        ),
        emails.upload_result(
            protocol,
            findings=emails.report_findings(report.findings)
            if report is not None
            else [emails.finding(reason)],
            unavailable=report is not None and report.unavailable,
        ),
    )
    _audit(
        conn,
        upload,
        "upload.reject",
        {"name": upload.shown, "reason": reason, "size": size, "sha256": sha256},
    )


def protocol_name(now: datetime, protocol_id: int, outcome: str, name: str) -> str:
    """The file name of a protocol in ``/receipts``."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    base = f"{stamp}_{protocol_id:07d}_{outcome}_{name}"
    return base[:240] + ".json"


def _protocol(
    conn: Connection,
    upload: Upload,
    outcome: Outcome,
    body: dict[str, object],
    document_id: int | None,
) -> UploadProtocol:
    """Insert the protocol and name it after its id; the row as the mails show it."""
    values: dict[str, Any] = {
        "depositor_id": upload.depositor.id,
        "file_name": "",
        "upload_name": upload.shown,
        "outcome": outcome.value,
        "document_id": document_id,
        "body": mailbox.protocol_json(body),
        "created_at": upload.now,
    }
    inserted = conn.execute(_NEW_PROTOCOL, values).inserted_primary_key
    assert inserted is not None
    protocol_id = int(inserted[0])
    values["id"] = protocol_id
    values["file_name"] = protocol_name(
        upload.now, protocol_id, outcome.value, upload.shown.replace("/", "_")
    )
    conn.execute(_PROTOCOL_NAME, {"protocol": protocol_id, "new_name": values["file_name"]})
    return UploadProtocol(**values)  # not added: the rows are written already


def _mails(
    conn: Connection, upload: Upload, protocol: UploadProtocol, receipt: Email, result: Email
) -> None:
    """Queue the receipt (Eingangsbestätigung) and the result mail of one upload."""
    depositor = upload.depositor
    upload.notifier.queue_in(
        conn,
        [
            Queued(f"upload:{protocol.id}:receipt", receipt, depositor),
            Queued(f"upload:{protocol.id}:result", result, depositor),
        ],
        now=upload.now,
    )


def _audit(conn: Connection, upload: Upload, action: str, details: dict[str, Any]) -> None:
    """Append the upload's audit event to the chain (``audit.append``).

    No savepoint and second try as in ``audit.record``: ``append`` holds the chain
    until the commit (SQLite's write lock, which this transaction holds from its
    start; PostgreSQL's advisory lock), so no other writer appends between its read
    of the head and its insert.
    """
    event = audit.Event(upload.actor, action, upload.now, upload.depositor.login, details)
    audit.append(conn, [event], upload.audit_key)
