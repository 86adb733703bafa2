"""E-mail notifications through a transactional outbox.

A mail is rendered and written to ``mail_outbox`` in the same transaction as the
event that causes it; its dedupe key is unique, so a retried transaction or a
second node never queues it twice. Digest mails are different: the undelivered
intent is the delivery row itself (``notified_at`` empty), and ``queue_digests``
turns all such rows of one recipient into one mail. A separate job sends.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
import jinja2
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.config import MailSettings, Settings
from qprserver.db.engine import Database
from qprserver.db.models import Account, Delivery, Document, MailMessage
from qprserver.exchange.folders import Folder

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent.parent / "templates" / "email"
FIRST_NAMES = 10
LEASE = timedelta(minutes=5)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render(template: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Subject, text body and HTML body of a template folder."""
    subject = _env.get_template(f"{template}/subject.txt").render(context)
    text = _env.get_template(f"{template}/body.txt").render(context)
    html = _env.get_template(f"{template}/body.html").render(context)
    return " ".join(subject.split()), text, html


class Notifier:
    """Queues mails for domain events; bound to the mail settings."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    def _base(self) -> dict[str, Any]:
        s = self.settings
        return {"portal": s.portal_name, "host": s.collect_host, "port": s.collect_port}

    async def queue(
        self,
        session: AsyncSession,
        *,
        key: str,
        template: str,
        account: Account,
        context: Mapping[str, Any],
        now: datetime,
    ) -> bool:
        """Queue one mail to an account; False when it gets none or it is queued already."""
        if not account.email or not account.notify:
            return False
        exists = await session.scalar(select(MailMessage.id).where(MailMessage.dedupe_key == key))
        if exists is not None:
            return False
        subject, text, html = render(template, {**self._base(), **context})
        message = MailMessage(
            dedupe_key=key,
            template=template,
            account_id=account.id,
            to_addr=account.email,
            subject=subject,
            body_text=text,
            body_html=html,
            status="queued",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        try:
            async with session.begin_nested():
                session.add(message)
                await session.flush()
        except IntegrityError:
            return False  # another transaction queued the same event first
        return True


async def queue_digests(db: Database, settings: Settings, now: datetime) -> int:
    """One digest mail per recipient for deliveries not yet announced; returns mails queued."""
    notifier = Notifier(settings.mail)
    queued = 0
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Delivery.id, Delivery.recipient_id, Delivery.name, Document.kind)
                .join(Document, Delivery.document_id == Document.id)
                .where(Delivery.notified_at.is_(None), Delivery.folder == Folder.INBOX)
                .order_by(Delivery.recipient_id, Delivery.id)
            )
        ).all()
        by_recipient: dict[int, list[tuple[int, str, str]]] = {}
        for delivery_id, recipient_id, name, kind in rows:
            by_recipient.setdefault(recipient_id, []).append((delivery_id, name, kind))
        for recipient_id, items in by_recipient.items():
            account = await session.get_one(Account, recipient_id)
            kinds = Counter(kind for _, _, kind in items)
            context = {
                "recipient_name": account.name,
                "recipient_ik": account.ik,
                "total": len(items),
                "kinds": [
                    {"label": _kind_label(settings, k), "count": n}
                    for k, n in sorted(kinds.items())
                ],
                "first_names": [name for _, name, _ in items[:FIRST_NAMES]],
                "more": max(0, len(items) - FIRST_NAMES),
            }
            # The newest delivery id names the digest: a rerun over the same rows, or a
            # second node racing, produces the same key and so no second mail.
            key = f"digest:{account.ik}:{items[-1][0]}"
            if await notifier.queue(
                session, key=key, template="digest", account=account, context=context, now=now
            ):
                queued += 1
            await session.execute(
                update(Delivery)
                .where(Delivery.id.in_([d for d, _, _ in items]))
                .values(notified_at=now)
            )
    return queued


def _kind_label(settings: Settings, kind: str) -> str:
    configured = settings.kinds.get(kind)
    return configured.description if configured and configured.description else kind


class Mailer(Protocol):
    """Something that delivers a message or raises."""

    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Delivers over SMTP with aiosmtplib."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(
            message,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.username or None,
            password=s.password or None,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            timeout=s.timeout,
        )


def build_message(row: MailMessage, settings: MailSettings, now: datetime) -> EmailMessage:
    """A multipart text+HTML message with the headers mail systems expect."""
    domain = settings.sender.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = row.to_addr
    message["Subject"] = row.subject
    message["Date"] = format_datetime(now)
    # Stable per outbox row: a resend after a crash carries the same Message-ID.
    message["Message-ID"] = f"<qpr.{row.id}.{int(row.created_at.timestamp())}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(row.body_text)
    message.add_alternative(row.body_html, subtype="html")
    return message


async def send_pending(
    db: Database, mailer: Mailer, settings: MailSettings, now: datetime, *, batch: int = 100
) -> dict[str, int]:
    """Send due messages once each; failures are retried later with growing waits."""
    stats = {"sent": 0, "failed": 0, "dead": 0}
    due = or_(
        and_(MailMessage.status == "queued", MailMessage.next_attempt_at <= now),
        and_(MailMessage.status == "sending", MailMessage.lease_until < now),
    )
    async with db.read_session() as session:
        ids = list(
            (
                await session.scalars(
                    select(MailMessage.id).where(due).order_by(MailMessage.id).limit(batch)
                )
            ).all()
        )
    for message_id in ids:
        async with db.session() as session:
            # Claim it: only one sender wins, and a crashed sender's claim expires.
            claimed = await session.execute(
                update(MailMessage)
                .where(MailMessage.id == message_id, due)
                .values(status="sending", lease_until=now + LEASE)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue
            row = await session.get_one(MailMessage, message_id)
        try:
            await mailer.send(build_message(row, settings, now))
        except Exception as exc:  # any failure of the relay: record and retry later
            error = f"{type(exc).__name__}: {exc}"[:1000]
            async with db.session() as session:
                row = await session.get_one(MailMessage, message_id)
                row.attempts += 1
                row.last_error = error
                row.lease_until = None
                if row.attempts >= settings.max_attempts:
                    row.status = "dead"
                    stats["dead"] += 1
                else:
                    row.status = "queued"
                    wait = settings.retry_base * 2 ** (row.attempts - 1)
                    row.next_attempt_at = now + timedelta(seconds=wait)
                    stats["failed"] += 1
            log.warning("mail %d to account %s failed: %s", message_id, row.account_id, error)
            continue
        async with db.session() as session:
            row = await session.get_one(MailMessage, message_id)
            row.status = "sent"
            row.sent_at = now
            row.attempts += 1
            row.last_error = None
            row.lease_until = None
        stats["sent"] += 1
    return stats
