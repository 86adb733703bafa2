"""The outbox: queueing in the caller's transaction, dedupe keys, and the drain."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import Connection, select

from qprserver.config import MailSettings
from qprserver.db.engine import Database
from qprserver.db.models import Account, MailMessage
from qprserver.notify import emails, outbox
from qprserver.notify.smtp import build_message
from qprserver.observability import logs

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SETTINGS = MailSettings(max_attempts=2, retry_base=60.0)


class Recording:
    """A mailer that keeps what it is given, or fails while ``down``."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.down = False

    async def send(self, message: EmailMessage) -> None:
        if self.down:
            raise ConnectionRefusedError("relay down")
        self.sent.append(message)


async def _account(
    db: Database, *, email: str | None = "lv@example.org", notify: bool = True
) -> Account:
    async with db.session() as session:
        account = Account(
            ik="180500016",
            name="Landesverband NW",
            email=email,
            roles="recipient",
            land="NW",
            status="active",
            notify=notify,
            created_at=NOW,
            updated_at=NOW,
        )
        session.add(account)
    return account


async def _queue(db: Database, account: Account, key: str) -> bool:
    async with db.session() as session:
        return await outbox.Notifier(SETTINGS).queue(
            session, key=key, email=emails.account_disabled(account), account=account, now=NOW
        )


async def _rows(db: Database) -> list[MailMessage]:
    async with db.read_session() as session:
        return list((await session.scalars(select(MailMessage).order_by(MailMessage.id))).all())


async def test_a_mail_is_queued_rendered_and_only_once_per_dedupe_key(db: Database) -> None:
    account = await _account(db)
    assert await _queue(db, account, "account:1")
    assert not await _queue(db, account, "account:1")
    (row,) = await _rows(db)
    assert (row.template, row.to_addr, row.status) == (
        "account_disabled",
        "lv@example.org",
        "queued",
    )
    assert row.subject == "QPR-Portal: Zugang für IK 180500016 gesperrt"
    assert "Landesverband NW (IK 180500016)" in row.body_text


async def test_a_mail_is_part_of_the_callers_transaction(db: Database) -> None:
    account = await _account(db)
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await outbox.Notifier(SETTINGS).queue(
                session,
                key="account:2",
                email=emails.account_disabled(account),
                account=account,
                now=NOW,
            )
            raise RuntimeError("the event fails after queueing")
    assert await _rows(db) == []


async def test_accounts_without_address_or_with_mail_off_get_nothing_queued(db: Database) -> None:
    silent = await _account(db, notify=False)
    assert not await _queue(db, silent, "account:3")
    async with db.session() as session:
        no_address = await session.get_one(Account, silent.id)
        no_address.notify, no_address.email = True, None
    assert not await _queue(db, no_address, "account:4")
    assert await _rows(db) == []


async def test_a_resend_after_a_failure_keeps_the_message_id_and_gives_up_after_the_last_try(
    db: Database,
) -> None:
    account = await _account(db)
    await _queue(db, account, "account:5")
    mailer = Recording()
    mailer.down = True
    assert await outbox.send_pending(db, mailer, SETTINGS, NOW) == {
        "sent": 0,
        "failed": 1,
        "dead": 0,
    }
    (row,) = await _rows(db)
    assert row.next_attempt_at == NOW + timedelta(seconds=60)
    assert row.last_error == "ConnectionRefusedError: relay down"
    # Not due yet: nothing is tried.
    assert await outbox.send_pending(db, mailer, SETTINGS, NOW + timedelta(seconds=59)) == {
        "sent": 0,
        "failed": 0,
        "dead": 0,
    }
    mailer.down = False
    later = NOW + timedelta(seconds=60)
    assert await outbox.send_pending(db, mailer, SETTINGS, later) == {
        "sent": 1,
        "failed": 0,
        "dead": 0,
    }
    (message,) = mailer.sent
    assert message["Message-ID"] == f"<qpr.{row.id}.{int(NOW.timestamp())}@example.org>"
    assert message["Date"] == "Sun, 22 Nov 2026 10:01:00 +0000"
    (row,) = await _rows(db)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)

    await _queue(db, account, "account:6")
    mailer.down = True
    for step in range(2):
        await outbox.send_pending(db, mailer, SETTINGS, later + timedelta(hours=step))
    assert [(r.status, r.attempts) for r in await _rows(db)] == [("sent", 2), ("dead", 2)]


def test_a_message_carries_both_bodies_and_the_headers_that_stop_auto_replies() -> None:
    mail = emails.render(emails.send_test("relay:25"), SETTINGS)
    message = build_message(SETTINGS, "ops@example.org", mail, NOW)
    assert message["From"] == "qpr-portal@example.org"
    assert message["To"] == "ops@example.org"
    assert message["Subject"] == "QPR-Portal: Testnachricht"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert str(message["Message-ID"]).endswith("@example.org>")
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and "über relay:25 funktioniert" in text.get_content()
    assert html is not None and "<code>relay:25</code>" in html.get_content()


async def test_each_attempt_is_told_as_mail_failed_sent_or_dead(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    account = await _account(db)
    await _queue(db, account, "account:7")
    mailer = Recording()
    mailer.down = True
    with caplog.at_level(logging.INFO, logger="qprserver.events"):
        await outbox.send_pending(db, mailer, SETTINGS, NOW)
        await outbox.send_pending(db, mailer, SETTINGS, NOW + timedelta(hours=1))
        await _queue(db, account, "account:8")
        mailer.down = False
        await outbox.send_pending(db, mailer, SETTINGS, NOW + timedelta(hours=2))
    told = [(r.getMessage(), getattr(r, logs.FIELDS)) for r in caplog.records]
    first, second = (row.id for row in await _rows(db))
    down = "ConnectionRefusedError: relay down"
    template = (await _rows(db))[0].template
    assert told == [
        ("mail.failed", _mail(first, template, account.id, 1, down)),
        ("mail.dead", _mail(first, template, account.id, 2, down)),
        ("mail.sent", _mail(second, template, account.id, 1)),
    ]


def _mail(
    message: int, template: str, account_id: int, attempts: int, error: str | None = None
) -> dict[str, object]:
    fields: dict[str, object] = {"message": message, "template": template}
    fields.update(account_id=account_id, attempts=attempts)
    if error is not None:
        fields["error"] = error
    return fields


async def test_mails_queued_on_a_synchronous_connection_skip_keys_queued_already(
    db: Database,
) -> None:
    account = await _account(db)
    assert await _queue(db, account, "upload:7:receipt")
    notifier = outbox.Notifier(SETTINGS)
    mail = emails.account_disabled(account)

    def work(conn: Connection) -> None:
        notifier.queue_in(
            conn,
            [
                outbox.Queued("upload:7:receipt", mail, account),
                outbox.Queued("upload:7:result", mail, account),
            ],
            now=NOW,
        )

    await db.write(work)
    await db.write(work)  # a second time queues nothing more
    rows = await _rows(db)
    assert [r.dedupe_key for r in rows] == ["upload:7:receipt", "upload:7:result"]
    assert (rows[1].to_addr, rows[1].status, rows[1].account_id) == (
        "lv@example.org",
        "queued",
        account.id,
    )
    assert rows[1].subject == rows[0].subject  # rendered the same way as ``queue`` does


async def test_mails_queued_on_a_synchronous_connection_skip_an_account_without_mail(
    db: Database,
) -> None:
    account = await _account(db, notify=False)
    notifier = outbox.Notifier(SETTINGS)
    await db.write(
        lambda conn: notifier.queue_in(
            conn,
            [outbox.Queued("upload:1:receipt", emails.account_disabled(account), account)],
            now=NOW,
        )
    )
    assert await _rows(db) == []
