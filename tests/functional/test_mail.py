"""Notifications through the outbox to a real SMTP server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from qprserver.clock import SystemClock
from qprserver.config import DatabaseSettings, Settings
from qprserver.db.models import MailMessage
from qprserver.notify import outbox
from qprserver.notify.smtp import SmtpMailer
from tests.functional.conftest import Instance, write_config
from tests.functional.harness import FACILITY_NW, LV_BY, LV_NW, MD_NW, Server, pdf_bytes
from tests.functional.smtp import SmtpServer

REPORT = f"{FACILITY_NW}_pruefbericht.pdf"


def _mail_settings(settings: Settings, smtp: SmtpServer) -> Settings:
    mail = settings.mail.model_copy(
        update={"smtp_port": smtp.port, "retry_base": 1.0, "max_attempts": 3}
    )
    return settings.model_copy(update={"mail": mail})


async def _put(server: Server, ik: str, path: str, data: bytes) -> None:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "wb") as f,
    ):
        await f.write(data)


async def _drain(server: Server, settings: Settings) -> dict[str, int]:
    now = SystemClock().now()
    await outbox.queue_digests(server.db, server.notifier, settings, now)
    return await outbox.send_pending(server.db, SmtpMailer(settings.mail), settings.mail, now)


async def _three_recipients(server: Server) -> None:
    # LV NW and the facility by route and subject; LV BY by a second route for NW.
    await server.add_route("pruefbericht", "NW", LV_BY)


async def test_one_upload_to_three_recipients_yields_exactly_three_digests(
    server: Server, smtp: SmtpServer
) -> None:
    await _three_recipients(server)
    settings = _mail_settings(server.settings, smtp)
    # Only the Landesverband accounts have addresses in the fixture; give one more.
    from qprserver.db.models import Account

    async with server.db.session() as session:
        for ik, addr in ((FACILITY_NW, "heim@example.org"), (LV_BY, "lv-by@example.org")):
            account = await session.scalar(select(Account).where(Account.ik == ik))
            assert account is not None
            account.email = addr
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    for _ in range(3):
        await _drain(server, settings)
    digests = [m for m in smtp.messages if "zum Abruf bereit" in str(m["Subject"])]
    assert sorted(str(m["To"]) for m in digests) == [
        "heim@example.org",
        "lv-by@example.org",
        "lv@example.org",
    ]
    mail = next(m for m in digests if str(m["To"]) == "lv@example.org")
    assert str(mail["From"]) == "qpr-portal@example.org"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"] and mail["Date"]
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert REPORT in text.get_content()
    assert "IK 180500016" in text.get_content()
    assert "/inbox" in text.get_content()
    assert f"<code>{REPORT}</code>" in html.get_content()
    # No document content in any mail.
    assert "%PDF" not in mail.as_string()


async def test_digest_gathers_many_deliveries_into_one_mail(
    server: Server, smtp: SmtpServer
) -> None:
    settings = _mail_settings(server.settings, smtp)
    for i in range(12):
        await _put(server, MD_NW, f"/outbox/{FACILITY_NW}_bericht_{i:02d}.pdf", pdf_bytes())
    await _drain(server, settings)
    digests = [
        m
        for m in smtp.messages
        if str(m["To"]) == "lv@example.org" and "zum Abruf bereit" in str(m["Subject"])
    ]
    assert len(digests) == 1
    body = digests[0].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "12 neue Dokumente" in str(digests[0]["Subject"])
    assert "… und 2 weitere" in text
    assert "Prüfbericht nach § 115 Abs. 1 SGB XI: 12" in text


async def test_depositor_gets_receipt_and_result_for_accepted_and_rejected_uploads(
    server: Server, smtp: SmtpServer
) -> None:
    from qprserver.db.models import Account

    async with server.db.session() as session:
        account = await session.scalar(select(Account).where(Account.ik == MD_NW))
        assert account is not None
        account.email = "md@example.org"
    settings = _mail_settings(server.settings, smtp)
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    with pytest.raises(Exception, match="unvollständig"):
        await _put(server, MD_NW, f"/outbox/{FACILITY_NW}_kaputt.pdf", b"%PDF-1.4 abgeschnitten")
    await _drain(server, settings)
    to_md = [m for m in smtp.messages if str(m["To"]) == "md@example.org"]
    subjects = sorted(str(m["Subject"]) for m in to_md)
    assert subjects == sorted(
        [
            f"QPR-Portal: Eingangsbestätigung für {FACILITY_NW}_kaputt.pdf",
            f"QPR-Portal: Eingangsbestätigung für {REPORT}",
            f"QPR-Portal: {FACILITY_NW}_kaputt.pdf abgelehnt",
            f"QPR-Portal: {REPORT} angenommen",
        ]
    )
    rejected = next(m for m in to_md if "abgelehnt" in str(m["Subject"]))
    body = rejected.get_body(("plain",))
    assert body is not None and "%%EOF fehlt" in body.get_content()


async def test_smtp_down_keeps_messages_queued_and_delivers_each_once_when_back(
    server: Server, smtp: SmtpServer
) -> None:
    settings = _mail_settings(server.settings, smtp)
    smtp.stop()
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    stats = await _drain(server, settings)
    assert stats["sent"] == 0 and stats["failed"] >= 1
    async with server.db.read_session() as session:
        queued = (await session.scalars(select(MailMessage))).all()
    assert queued and all(m.status == "queued" and m.last_error for m in queued)
    smtp.start()
    later = SystemClock().now() + timedelta(minutes=5)
    for _ in range(2):
        await outbox.send_pending(server.db, SmtpMailer(settings.mail), settings.mail, later)
    assert len(smtp.messages) == len(queued)
    async with server.db.read_session() as session:
        statuses = {m.status for m in (await session.scalars(select(MailMessage))).all()}
    assert statuses == {"sent"}


async def test_a_message_is_dead_after_the_last_attempt(server: Server, smtp: SmtpServer) -> None:
    settings = _mail_settings(server.settings, smtp)
    smtp.stop()
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    now = SystemClock().now()
    await outbox.queue_digests(server.db, server.notifier, settings, now)
    for step in range(4):
        await outbox.send_pending(
            server.db,
            SmtpMailer(settings.mail),
            settings.mail,
            now + timedelta(hours=step),
        )
    async with server.db.read_session() as session:
        rows = (await session.scalars(select(MailMessage))).all()
    assert rows and all(m.status == "dead" and m.attempts == 3 for m in rows)


async def test_accounts_without_address_or_with_notifications_off_get_no_mail(
    server: Server, smtp: SmtpServer
) -> None:
    from qprserver.db.models import Account

    async with server.db.session() as session:
        lv = await session.scalar(select(Account).where(Account.ik == LV_NW))
        assert lv is not None
        lv.notify = False
    settings = _mail_settings(server.settings, smtp)
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    await _drain(server, settings)
    # LV NW switched off, the facility has no address, MD NW has no address: what
    # went out are LV NW's mails of being set up, from before it switched them off.
    assert sorted(str(m["Subject"]) for m in smtp.messages) == [
        f"QPR-Portal: Zugang für IK {LV_NW} eingerichtet",
        f"QPR-Portal: neuer SSH-Schlüssel für IK {LV_NW}",
    ]


async def test_setting_up_an_account_mails_its_access_and_its_first_key(
    server: Server, smtp: SmtpServer
) -> None:
    await _drain(server, _mail_settings(server.settings, smtp))
    # Of the fixture's accounts only LV NW has an address.
    assert {str(m["To"]) for m in smtp.messages} == {"lv@example.org"}
    created, key = sorted(smtp.messages, key=lambda m: str(m["Subject"]))
    assert str(created["Subject"]) == f"QPR-Portal: Zugang für IK {LV_NW} eingerichtet"
    text = created.get_body(("plain",))
    assert text is not None
    assert "für Landesverband NW (IK 180500016)" in text.get_content()
    assert "Rollen: recipient" in text.get_content()
    assert "auf sftp.example.org, Port 2222" in text.get_content()
    assert str(key["Subject"]) == f"QPR-Portal: neuer SSH-Schlüssel für IK {LV_NW}"
    body = key.get_body(("plain",))
    assert body is not None and "Fingerabdruck: SHA256:" in body.get_content()


def _cli(root: Path, database: DatabaseSettings, smtp: SmtpServer) -> Instance:
    config = write_config(root, database, f"[mail]\nsmtp_port = {smtp.port}\n")
    instance = Instance(root, config)
    instance.ok("init")
    return instance


def test_send_test_sends_the_test_template_past_the_outbox(
    tmp_path: Path, database_settings: DatabaseSettings, smtp: SmtpServer
) -> None:
    instance = _cli(tmp_path, database_settings, smtp)
    out = instance.ok("mail", "send-test", "Ops@Example.org")
    assert out.strip() == f"test message sent to Ops@example.org via 127.0.0.1:{smtp.port}"
    (message,) = smtp.messages
    assert str(message["Subject"]) == "QPR-Portal: Testnachricht"
    assert str(message["To"]) == "Ops@example.org"
    assert message["Auto-Submitted"] == "auto-generated" and message["Message-ID"]
    text = message.get_body(("plain",))
    assert text is not None and f"über 127.0.0.1:{smtp.port} funktioniert" in text.get_content()
    assert instance.json("mail", "list") == []  # never in the outbox
    smtp.stop()
    failed = instance.run("mail", "send-test", "ops@example.org")
    assert failed.returncode == 1
    assert failed.stderr.startswith(f"Error: sending via 127.0.0.1:{smtp.port} failed: ")


def test_account_commands_queue_their_mails_in_the_outbox(
    tmp_path: Path, database_settings: DatabaseSettings, smtp: SmtpServer
) -> None:
    instance = _cli(tmp_path, database_settings, smtp)
    ik = "105830016"
    instance.ok(
        "account", "add", ik, "--name", "AOK", "--email", "lv@example.org", "--role", "recipient"
    )
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    key_file = tmp_path / "id.pub"
    key_file.write_bytes(
        key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    instance.ok("account", "key", "add", ik, str(key_file))
    instance.ok("account", "disable", ik)
    instance.ok("account", "enable", ik)  # no mail for enabling
    queued = instance.json("mail", "list")
    assert [(m["template"], m["to"], m["status"]) for m in queued] == [
        ("account_disabled", "lv@example.org", "queued"),
        ("key_added", "lv@example.org", "queued"),
        ("account_created", "lv@example.org", "queued"),
    ]
    assert queued[2]["subject"] == f"QPR-Portal: Zugang für IK {ik} eingerichtet"
    instance.ok("jobs", "run", "mail-send")
    assert sorted(str(m["Subject"]) for m in smtp.messages) == [
        f"QPR-Portal: Zugang für IK {ik} eingerichtet",
        f"QPR-Portal: Zugang für IK {ik} gesperrt",
        f"QPR-Portal: neuer SSH-Schlüssel für IK {ik}",
    ]
