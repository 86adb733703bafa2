"""``registration``: the operator's review commands on an instance, with the mails they
send through a real SMTP server and the activation letter read back from its PDF."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pyotp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts import registration
from qprserver.accounts.registration import RegistrationForm
from qprserver.audit.chain import Actor
from qprserver.clock import SystemClock
from qprserver.config import load_config
from qprserver.db.models import MailMessage
from qprserver.notify.outbox import Notifier
from qprserver.security import totp
from tests.functional.conftest import Instance
from tests.functional.smtp import SmtpServer
from tests.registrations import PFLEGEKASSE_NW

FORM = replace(PFLEGEKASSE_NW, procedures=("QPR_0_WEB",))


def _apply(instance: Instance, form: RegistrationForm = FORM) -> int:
    """What the portal does from the form to the application; the registration's id."""
    settings = load_config(instance.config)
    notifier = Notifier(settings.mail)
    key = totp.load_key(settings.security.totp_key)
    now = SystemClock().now()

    async def submit(session: AsyncSession) -> None:
        await registration.register(
            session,
            now,
            form,
            address="192.0.2.1",
            settings=settings.registration,
            notifier=notifier,
        )

    async def link(session: AsyncSession) -> str:
        body = await session.scalar(
            select(MailMessage.body_text).where(MailMessage.template == "registration_confirm")
        )
        match = re.search(r"/registrierung/bestaetigen/([A-Za-z0-9_-]+)", body or "")
        assert match
        return match.group(1)

    async def complete(session: AsyncSession, confirm_token: str) -> int:
        token = await registration.confirm(
            session, now, confirm_token, settings=settings.registration, notifier=notifier
        )
        account = await registration.set_first_password(session, now, token, "ein langes Passwort")
        enrolment = await totp.enable(session, Actor(form.ik, "web"), now, form.ik, key, "QPR")
        assert pyotp.parse_uri(enrolment.uri).secret
        await registration.apply(session, now, account.id, notifier)
        return (await registration.open_registration(session, account.id)).id

    instance.in_session(submit)
    confirm_token = instance.in_session(link)
    return instance.in_session(lambda session: complete(session, confirm_token))


def test_the_operator_lists_shows_and_approves_and_the_participant_is_mailed(
    instance: Instance, smtp: SmtpServer
) -> None:
    registration_id = _apply(instance)
    [row] = instance.json("registration", "list", "--state", "beantragt")
    assert row["id"] == registration_id and row["procedures"] == ["QPR_0_WEB"]
    assert instance.json("registration", "list", "--state", "registriert") == []
    shown = instance.json("registration", "show", str(registration_id))
    assert shown["address"] == "Musterweg 5, 40210 Düsseldorf" and not shown["stuck"]
    table = instance.ok("registration", "list")
    assert "Pflegekasse Muster" in table and "beantragt" in table
    out = instance.ok(
        "registration", "approve", str(registration_id), "--procedure", "QPR_0_WEB", "--land", "NW"
    )
    assert "approved for QPR_0_WEB" in out and "registration letter" in out
    assert "freigeschaltet" in instance.fails("registration", "approve", str(registration_id))
    account = instance.json("account", "show", FORM.ik)
    assert account["status"] == "pending" and account["procedures"] == ["QPR_0_WEB"]

    text = instance.config.read_text(encoding="utf-8")
    instance.config.write_text(f"{text}\n[mail]\nsmtp_port = {smtp.port}\n", encoding="utf-8")
    instance.ok("jobs", "run", "mail-send")
    subjects = {m["Subject"]: m for m in smtp.collector.messages}
    assert set(subjects) >= {
        "QPR-Portal: Bitte bestätigen Sie Ihre Registrierung (IK 180500016)",
        "QPR-Portal: Antrag eingegangen (IK 180500016)",
        "QPR-Portal: Zugang freigeschaltet (IK 180500016)",
    }
    assert all(rcpt == [FORM.email] for rcpt in smtp.collector.recipients)


def test_the_activation_letter_carries_a_code_that_the_pdf_gives_back(
    instance: Instance, tmp_path: Path
) -> None:
    registration_id = _apply(instance)
    pdf = tmp_path / "brief.pdf"
    neither = instance.run("registration", "letter", "-o", str(pdf))
    assert neither.returncode == 2 and "a registration ID or --all" in neither.stderr
    assert "wartet auf keinen" in instance.fails(
        "registration", "letter", str(registration_id), "-o", str(pdf)
    )
    instance.ok("registration", "approve", str(registration_id))
    result = instance.json("registration", "letter", "--all", "-o", str(pdf))
    assert result == {"file": str(pdf), "registrations": [registration_id]}
    assert instance.json("registration", "letter", "--all", "-o", str(pdf))["file"] is None
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Pflegekasse Muster" in text and "40210 Düsseldorf" in text
    code = re.search(r"\b([A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4})\b", text)
    assert code, text
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")],
        check=True,
    )
    assert (tmp_path / "page-1.png").read_bytes().startswith(b"\x89PNG")

    settings = load_config(instance.config)

    async def activate(session: AsyncSession) -> str:
        from qprserver.accounts import activation
        from qprserver.accounts.service import get_account

        account = await get_account(session, FORM.ik)
        await activation.activate(session, SystemClock().now(), account.id, code.group(1))
        return account.status.value

    assert settings.registration.postal_activation
    assert instance.in_session(activate) == "active"


def test_reject_needs_a_reason_and_a_rejected_registration_stays_rejected(
    instance: Instance,
) -> None:
    registration_id = _apply(instance)
    assert "--reason" in instance.run("registration", "reject", str(registration_id)).stderr
    assert "Begründung" in instance.fails(
        "registration", "reject", str(registration_id), "--reason", "  "
    )
    out = instance.json("registration", "reject", str(registration_id), "--reason", "Kein IK")
    assert out["state"] == "abgelehnt" and out["reason"] == "Kein IK"
    assert instance.json("account", "show", FORM.ik)["status"] == "disabled"
    assert "keine Registrierung 999" in instance.fails("registration", "show", "999")


def test_account_add_takes_procedures_and_totp_reset_mails_the_holder(instance: Instance) -> None:
    instance.ok(
        "account", "add", "180500027", "--name", "LV", "--role", "recipient",
        "--email", "lv@example.org", "--procedure", "qpr_0_sftp",
    )  # fmt: skip
    assert instance.json("account", "show", "180500027")["procedures"] == ["QPR_0_SFTP"]
    instance.ok("account", "update", "180500027", "--procedure", "QPR_0_WEB")
    assert instance.json("account", "show", "180500027")["procedures"] == ["QPR_0_WEB"]
    assert "kein" in instance.fails("account", "totp", "reset", "180500027")
    instance.ok("account", "totp", "enable", "180500027")
    assert "reset" in instance.ok("account", "totp", "reset", "180500027")
    mails = instance.json("mail", "list")
    assert any(m["subject"].startswith("QPR-Portal: Zweiter Faktor zurückgesetzt") for m in mails)
