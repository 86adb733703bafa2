"""``mail``: the outbox, and a test of the SMTP settings."""

from __future__ import annotations

import asyncio

import click
from sqlalchemy import select

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database
from qprserver.db.models import MAIL_STATUSES, MailMessage


@click.group("mail")
def mail_group() -> None:
    """Outgoing mail."""


MAIL_COLUMNS = (
    Column("ID", "id"),
    Column("Status", "status"),
    Column("Vorlage", "template"),
    Column("An", "to"),
    Column("Versuche", "attempts"),
    Column("Letzter Fehler", "last_error"),
)


@mail_group.command("list")
@click.option("--status", type=click.Choice(MAIL_STATUSES), default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@json_option
@pass_app
def mail_list(app: App, status: str | None, limit: int, as_json: bool) -> None:
    """Messages in the outbox, newest first."""

    async def work(db: Database) -> list[dict[str, object]]:
        async with db.read_session() as session:
            query = select(MailMessage).order_by(MailMessage.id.desc()).limit(limit)
            if status:
                query = query.where(MailMessage.status == status)
            return [
                {
                    "id": m.id,
                    "status": m.status,
                    "template": m.template,
                    "to": m.to_addr,
                    "subject": m.subject,
                    "attempts": m.attempts,
                    "last_error": m.last_error,
                    "created_at": m.created_at.isoformat(),
                    "sent_at": m.sent_at.isoformat() if m.sent_at else None,
                }
                for m in await session.scalars(query)
            ]

    emit(app.run(work), as_json=as_json, columns=MAIL_COLUMNS)


@mail_group.command("send-test")
@click.argument("address")
@pass_app
def mail_send_test(app: App, address: str) -> None:
    """Send a test message to ADDRESS directly (not through the outbox)."""
    from qprserver.accounts.fields import normalise_email
    from qprserver.notify import emails, smtp

    settings = app.settings.mail
    to = normalise_email(address)
    if to is None:
        raise click.ClickException("an address is needed")
    relay = f"{settings.smtp_host}:{settings.smtp_port}"
    mail = emails.render(emails.send_test(relay), settings)
    message = smtp.build_message(settings, to, mail, app.clock.now())
    try:
        asyncio.run(smtp.SmtpMailer(settings).send(message))
    except Exception as exc:  # the operator wants the relay's reason, whatever it is
        raise click.ClickException(
            f"sending via {relay} failed: {type(exc).__name__}: {exc}"
        ) from None
    click.echo(f"test message sent to {to} via {relay}")
