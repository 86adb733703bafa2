"""``qprserver mail list | send-test`` through the real CLI, against a real SMTP server."""

from __future__ import annotations

from tests.functional.conftest import Instance
from tests.functional.harness import LV_NW
from tests.functional.smtp import SmtpServer, free_port

MAIL_KEYS = {
    "id",
    "status",
    "template",
    "to",
    "subject",
    "attempts",
    "last_error",
    "created_at",
    "sent_at",
}


def _relay(instance: Instance, port: int) -> None:
    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(f"{text}\n[mail]\nsmtp_port = {port}\n", encoding="utf-8")


def test_mail_list_shows_queued_mail_then_sent_mail_by_status(
    instance: Instance, smtp: SmtpServer
) -> None:
    _relay(instance, smtp.port)
    instance.ok(
        "account",
        "add",
        LV_NW,
        "--name",
        "LV NW",
        "--email",
        "lv@example.org",
        "--role",
        "recipient",
    )
    (queued,) = instance.json("mail", "list")
    assert set(queued) >= MAIL_KEYS
    assert (queued["status"], queued["template"], queued["to"]) == (
        "queued",
        "account_created",
        "lv@example.org",
    )
    assert queued["attempts"] == 0 and queued["sent_at"] is None
    assert instance.json("mail", "list", "--status", "sent") == []

    instance.ok("jobs", "run", "mail-send")
    assert [m["To"] for m in smtp.messages] == ["lv@example.org"]
    assert instance.json("mail", "list", "--status", "queued") == []
    (sent,) = instance.json("mail", "list", "--status", "sent")
    assert sent["id"] == queued["id"] and sent["sent_at"] is not None
    table = instance.ok("mail", "list")
    assert "account_created" in table and "lv@example.org" in table


def test_send_test_delivers_a_message_to_the_relay_without_the_outbox(
    instance: Instance, smtp: SmtpServer
) -> None:
    _relay(instance, smtp.port)
    out = instance.ok("mail", "send-test", " Ops@Example.org ")
    assert out.strip() == f"test message sent to Ops@example.org via 127.0.0.1:{smtp.port}"
    (message,) = smtp.messages
    assert message["To"] == "Ops@example.org" and message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert instance.json("mail", "list") == []


def test_send_test_to_a_relay_that_does_not_answer_fails_with_its_reason(
    instance: Instance,
) -> None:
    port = free_port()
    _relay(instance, port)
    line = instance.fails("mail", "send-test", "ops@example.org")
    assert line.startswith(f"Error: sending via 127.0.0.1:{port} failed: SMTPConnectError: ")
    assert instance.fails("mail", "send-test", " ") == "Error: an address is needed"
    line = instance.fails("mail", "send-test", "ops at example.org")
    assert line.startswith("Error: ungültige E-Mail-Adresse 'ops at example.org'")
