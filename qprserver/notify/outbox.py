"""The transactional outbox: mails queued with the event that causes them, sent later.

``Notifier.queue`` renders a mail (``emails``) and writes it to ``mail_outbox`` in the
caller's transaction, so a mail exists exactly when its event committed
(``queue_in`` does the same for several mails on a synchronous connection). The caller
names the event in a dedupe key (``account:<audit event>``, ``upload:<protocol>:…``,
``bundle:<id>``, ``digest:<IK>:<newest delivery>``); the key is unique, so a retried
transaction or a second node never queues it twice. Digest mails are different: the
undelivered intent is the delivery row itself (``notified_at`` empty), and
``queue_digests`` turns all such rows of one recipient into one mail.
``send_pending`` is the drain the mail-send job runs: it claims due rows with a
lease, hands them to a ``Mailer`` (``smtp``), retries failures with doubling waits
and gives a row up as ``dead`` after the last attempt.

One ``Notifier`` is built by the composition root (``service.py`` for ``serve``,
``cli/app.py`` for the CLI) and passed to whatever queues mail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.config import MailSettings, Settings
from qprserver.db.engine import Database
from qprserver.db.models import Account, Delivery, Document, MailMessage
from qprserver.exchange.folders import Folder
from qprserver.notify import emails
from qprserver.notify.emails import Email, Rendered
from qprserver.notify.smtp import Mailer, build_message
from qprserver.observability import events

FIRST_NAMES = 10
LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Queued:
    """One mail to queue in ``Notifier.queue_in``: its dedupe key, the mail, to whom."""

    key: str
    email: Email
    account: Account


def _row(
    settings: MailSettings,
    key: str,
    email: Email,
    to_addr: str,
    account_id: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The outbox row of one mail, rendered now."""
    mail = emails.render(email, settings)
    return {
        "dedupe_key": key,
        "template": email.template,
        "account_id": account_id,
        "to_addr": to_addr,
        "subject": mail.subject,
        "body_text": mail.text,
        "body_html": mail.html,
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


def _insert_new(dialect: str) -> Any:
    """An insert into the outbox that skips a row whose dedupe key is queued already."""
    table = cast(Table, MailMessage.__table__)
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])


class Notifier:
    """Queues mails for domain events; bound to the mail settings."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def queue(
        self, session: AsyncSession, *, key: str, email: Email, account: Account, now: datetime
    ) -> bool:
        """Queue one mail to an account; False when it gets none or it is queued already."""
        if not account.email or not account.notify:
            return False
        return await self.queue_to(
            session, key=key, email=email, to_addr=account.email, now=now, account_id=account.id
        )

    async def queue_to(
        self,
        session: AsyncSession,
        *,
        key: str,
        email: Email,
        to_addr: str,
        now: datetime,
        account_id: int | None = None,
    ) -> bool:
        """Queue one mail to an address, whatever an account's mail switch says (links a
        registrant needs); False when it is queued already."""
        exists = await session.scalar(select(MailMessage.id).where(MailMessage.dedupe_key == key))
        if exists is not None:
            return False
        message = MailMessage(**_row(self.settings, key, email, to_addr, account_id, now))
        try:
            async with session.begin_nested():
                session.add(message)
                await session.flush()
        except IntegrityError:
            return False  # another transaction queued the same event first
        return True

    def queue_in(self, conn: Connection, mails: Sequence[Queued], *, now: datetime) -> None:
        """Queue mails to accounts on a synchronous connection (``Database.write``): one
        insert for all of them, none for an account that gets no mail.

        A key queued already is skipped by the insert itself (``ON CONFLICT DO
        NOTHING``) instead of a look-up and a savepoint per mail as in ``queue``.
        """
        rows = [
            _row(self.settings, mail.key, mail.email, mail.account.email, mail.account.id, now)
            for mail in mails
            if mail.account.email and mail.account.notify
        ]
        if rows:
            conn.execute(_insert_new(conn.dialect.name), rows)


async def queue_digests(db: Database, notifier: Notifier, settings: Settings, now: datetime) -> int:
    """One digest mail per recipient for deliveries not yet announced; returns mails queued."""
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
            email = emails.digest(
                account,
                [(_kind_label(settings, k), n) for k, n in sorted(kinds.items())],
                [name for _, name, _ in items],
                first=FIRST_NAMES,
            )
            # The newest delivery id names the digest: a rerun over the same rows, or a
            # second node racing, produces the same key and so no second mail.
            key = f"digest:{account.login}:{items[-1][0]}"
            if await notifier.queue(session, key=key, email=email, account=account, now=now):
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
            await mailer.send(_message(row, settings, now))
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
            events.mail(
                row.status if row.status == "dead" else "failed",
                message=message_id,
                template=row.template,
                account_id=row.account_id,
                attempts=row.attempts,
                error=error,
            )
            continue
        async with db.session() as session:
            row = await session.get_one(MailMessage, message_id)
            row.status = "sent"
            row.sent_at = now
            row.attempts += 1
            row.last_error = None
            row.lease_until = None
        events.mail(
            "sent",
            message=message_id,
            template=row.template,
            account_id=row.account_id,
            attempts=row.attempts,
        )
        stats["sent"] += 1
    return stats


def _message(row: MailMessage, settings: MailSettings, now: datetime) -> EmailMessage:
    mail = Rendered(row.subject, row.body_text, row.body_html)
    # Stable per outbox row: a resend after a crash carries the same Message-ID.
    stable = f"qpr.{row.id}.{int(row.created_at.timestamp())}"
    return build_message(settings, row.to_addr, mail, now, message_id=stable)
