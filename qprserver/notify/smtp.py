"""Sending mail: the message as mail systems expect it, and delivery over SMTP.

``build_message`` is the one place that writes headers; the outbox's drain and the
operator's ``mail send-test`` both use it. ``SmtpMailer`` delivers with aiosmtplib,
which is imported on the first send so that queueing a mail never loads it.
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Protocol

from qprserver.config import MailSettings
from qprserver.notify.emails import Rendered


class Mailer(Protocol):
    """Something that delivers a message or raises."""

    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Delivers over SMTP with aiosmtplib."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib

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


def build_message(
    settings: MailSettings, to: str, mail: Rendered, now: datetime, *, message_id: str = ""
) -> EmailMessage:
    """A multipart text+HTML message from the configured sender.

    ``message_id`` is the part of the Message-ID before the ``@``; one that names the
    outbox row keeps a resend after a crash recognisable. Empty: a fresh one.
    """
    domain = settings.sender.rpartition("@")[2] or "localhost"
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = to
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{message_id}@{domain}>" if message_id else make_msgid(domain=domain)
    # Keeps vacation replies and "out of office" bounces away from the sender.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message
