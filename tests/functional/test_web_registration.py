"""A participant's way in through the portal: form, mail link, first password, second
factor, the operator's approval, the letter's code, then documents; and each bad
input refused with nothing half-made left behind."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import asyncssh
import httpx
import pyotp
from sqlalchemy import func, select

from qprserver.accounts import activation
from qprserver.accounts.enums import AccountStatus, RegistrationState
from qprserver.db.models import Account, MailMessage, Registration
from tests.functional.harness import ADMIN, LV_NW, MD_NW, pdf_bytes
from tests.functional.web import (
    PASSWORD,
    Web,
    approve_registration,
    csrf_of,
    deposit,
    document_ids,
)

# A nursing home in NW: the documents about it reach it once it has an account.
FACILITY = "510512361"
FORM = {
    "ik": FACILITY,
    "institution": "Haus Sonnenhang",
    "street": "Am Hang 3",
    "postcode": "40211",
    "city": "Düsseldorf",
    "contact": "Max Muster",
    "email": "max@sonnenhang.example.org",
    "phone": "0211 555-10",
    "rolle": "recipient",
    "verfahren": "QPR_0_WEB",
}
_SECRET = re.compile(r'<code class="geheim">([A-Z2-7 ]+)</code>')


async def _mail(web: Web, template: str) -> MailMessage:
    async with web.server.db.read_session() as session:
        rows = (
            await session.scalars(
                select(MailMessage)
                .where(MailMessage.template == template)
                .order_by(MailMessage.id.desc())
            )
        ).all()
    assert rows, f"no {template} mail"
    return rows[0]


def _path(mail: MailMessage) -> str:
    found = re.search(r"https?://[^/\s]+(/[^\s]+)", mail.body_text)
    assert found is not None, mail.body_text
    return found.group(1)


async def _submit(client: httpx.AsyncClient, **changes: str) -> httpx.Response:
    form = await client.get("/registrieren")
    return await client.post("/registrieren", data={"csrf": csrf_of(form.text), **FORM, **changes})


async def _count(web: Web) -> int:
    async with web.server.db.read_session() as session:
        return await session.scalar(select(func.count()).select_from(Registration)) or 0


async def _apply_in_browser(web: Web, client: httpx.AsyncClient, **changes: str) -> str:
    """From the form to the application; the TOTP secret enrolled on the way."""
    sent = await _submit(client, **changes)
    assert sent.status_code == 200 and "Registrierung eingegangen" in sent.text
    confirm_path = _path(await _mail(web, "registration_confirm"))
    page = await client.get(confirm_path)
    assert page.status_code == 200 and "Adresse bestätigen" in page.text
    confirmed = await client.post(confirm_path, data={"csrf": csrf_of(page.text)})
    assert confirmed.status_code == 303
    password_path = confirmed.headers["location"]
    assert password_path.startswith("/registrierung/passwort/")
    form = await client.get(password_path)
    mismatch = await client.post(
        password_path,
        data={"csrf": csrf_of(form.text), "passwort": PASSWORD, "wiederholung": PASSWORD + "x"},
    )
    assert mismatch.status_code == 400 and "stimmen nicht überein" in mismatch.text
    done = await client.post(
        password_path,
        data={"csrf": csrf_of(form.text), "passwort": PASSWORD, "wiederholung": PASSWORD},
    )
    assert done.status_code == 303 and done.headers["location"] == "/einrichten"
    # A pending registrant sees nothing but its enrolment.
    assert (await client.get("/posteingang")).headers["location"] == "/einrichten"
    enrol = await client.get("/einrichten")
    found = _SECRET.search(enrol.text)
    assert found is not None
    secret = found.group(1).replace(" ", "")
    applied = await client.post(
        "/einrichten", data={"csrf": csrf_of(enrol.text), "code": web.code(secret)}
    )
    assert applied.status_code == 200 and "Antrag eingereicht" in applied.text
    assert len(re.findall(r"<li><code>", applied.text)) == 10
    # The application ended the session.
    assert (await client.get("/einrichten")).headers["location"] == "/anmelden"
    return secret


async def test_a_registrant_comes_in_by_form_mail_letter_and_then_collects_a_document(
    web: Web,
) -> None:
    async with web.client() as client:
        secret = await _apply_in_browser(web, client)
    assert (await _mail(web, "registration_applied")).to_addr == FORM["email"]
    async with web.client() as client:
        # Applied, not yet decided: no way in.
        refused = await web.password_step(client, FACILITY)
        assert refused.status_code == 200 and "fehlgeschlagen" in refused.text
    async with web.server.db.read_session() as session:
        state = await session.scalar(select(Registration.state))
    assert state is RegistrationState.BEANTRAGT
    registration_id = await approve_registration(web)
    async with web.server.db.session() as session:
        letter = await activation.issue_letter(
            session, ADMIN, web.clock.now(), registration_id, web.portal.settings.registration
        )
    async with web.client() as client:
        first = await web.password_step(client, FACILITY)
        assert first.headers["location"] == "/anmelden/code"
        page = await client.get("/anmelden/code")
        assert "Aktivierungscode" in page.text
        wrong = await client.post(
            "/anmelden/code",
            data={
                "csrf": csrf_of(page.text),
                "code": web.code(secret),
                "aktivierungscode": "AAAA-BBBB-CCCC-DDDD",
            },
        )
        # Approved, not yet activated: the app's code alone is no way in.
        assert wrong.status_code == 200 and "nicht angenommen" in wrong.text
        done = await client.post(
            "/anmelden/code",
            data={
                "csrf": csrf_of(page.text),
                "code": web.code(secret),
                "aktivierungscode": letter.code.lower(),
            },
        )
        assert done.status_code == 303 and done.headers["location"] == "/"
        await deposit(web.server, MD_NW, f"{FACILITY}_Prüfbericht 2026.pdf", pdf_bytes(5_000))
        inbox = document_ids((await client.get("/posteingang")).text)
        assert list(inbox) == [f"{FACILITY}_Prüfbericht 2026.pdf"]
    async with web.server.db.read_session() as session:
        account = await session.scalar(select(Account).where(Account.ik == FACILITY))
    assert account is not None and account.status is AccountStatus.ACTIVE


async def test_a_bad_field_is_named_on_the_form_and_nothing_is_stored(web: Web) -> None:
    async with web.client() as client:
        bad_ik = await _submit(client, ik="510512362")
        assert bad_ik.status_code == 400
        assert "Prüfziffer 1 erwartet, 2 gefunden" in bad_ik.text
        assert 'value="Haus Sonnenhang"' in bad_ik.text  # the form keeps what was typed
        depositor = await _submit(client, rolle="depositor")
        assert depositor.status_code == 400 and "Einsteller" in depositor.text
        no_token = await client.post("/registrieren", data=FORM)
        assert no_token.status_code == 403
    assert await _count(web) == 0


async def test_a_known_ik_gets_the_same_page_and_no_second_registration(web: Web) -> None:
    async with web.client() as client:
        first = await _submit(client)
        second = await _submit(client, email="someone@else.example.org")
    assert first.status_code == second.status_code == 200
    assert _text(first.text) == _text(second.text)
    assert await _count(web) == 1
    assert (await _mail(web, "registration_known")).to_addr == FORM["email"]


def _text(page: str) -> str:
    """A page without its per-request token."""
    return re.sub(r'name="csrf" value="[^"]+"', "", page)


async def test_a_confirmation_link_is_used_by_the_button_not_by_opening_it(web: Web) -> None:
    async with web.client() as client:
        await _submit(client)
        path = _path(await _mail(web, "registration_confirm"))
        for _ in range(3):  # a mail scanner following the link
            assert (await client.get(path)).status_code == 200
        page = await client.get(path)
        assert (await client.post(path, data={"csrf": csrf_of(page.text)})).status_code == 303
        again = await client.post(path, data={"csrf": csrf_of(page.text)})
        assert again.status_code == 400 and "schon benutzt" in again.text
        broken = await client.get("/registrierung/bestaetigen/kurz")
        assert broken.status_code == 404


async def test_a_forgotten_password_is_reset_by_the_mailed_link_for_a_known_address(
    web: Web,
) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        assert (await client.get("/posteingang")).status_code == 200
        async with web.client() as other:
            form = await other.get("/passwort/vergessen")
            unknown = await other.post(
                "/passwort/vergessen",
                data={"csrf": csrf_of(form.text), "email": "nobody@example.org"},
            )
            known = await other.post(
                "/passwort/vergessen", data={"csrf": csrf_of(form.text), "email": "lv@example.org"}
            )
            assert _text(unknown.text) == _text(known.text)
            path = _path(await _mail(web, "password_reset"))
            page = await other.get(path)
            new = "ein ganz neues Passwort"
            done = await other.post(
                path, data={"csrf": csrf_of(page.text), "passwort": new, "wiederholung": new}
            )
            assert done.status_code == 303 and done.headers["location"] == "/anmelden?neu"
        # The reset ended the session that was open elsewhere.
        assert (await client.get("/posteingang")).headers["location"] == "/anmelden"
    async with web.client() as client:
        assert (await web.password_step(client, LV_NW, new)).status_code == 303


class _CodeClient(asyncssh.SSHClient):
    """Answers the second factor's keyboard-interactive prompt with one code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        return [self.code] if prompts else []


async def test_a_registrant_approved_for_sftp_with_its_key_collects_by_sftp_and_not_by_web(
    web: Web,
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    public = key.export_public_key().decode().strip()
    settings = web.portal.settings.registration.model_copy(update={"postal_activation": False})
    web.portal.settings = web.portal.settings.model_copy(update={"registration": settings})
    async with web.client() as client:
        secret = await _apply_in_browser(web, client, verfahren="QPR_0_SFTP", ssh_key=public)
    await approve_registration(web)
    approved = await _mail(web, "registration_approved")
    assert "Benutzername 510512361" in approved.body_text and "ab sofort" in approved.body_text
    name = f"{FACILITY}_Prüfbericht 2026.pdf"
    data = pdf_bytes(7_000, b"sftp")
    await deposit(web.server, MD_NW, name, data)
    # The SFTP server reads the real clock, which the portal's test clock ran ahead of
    # when the enrolment's code was used: the next step's code is new to both.
    code = pyotp.TOTP(secret).at(time.time() + 30)
    async with (
        web.server.connect(
            FACILITY,
            client_keys=[key],
            client_factory=lambda: _CodeClient(code),
            kbdint_auth=True,
            password=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{name}", "rb") as handle,
    ):
        assert await handle.read() == data
    # Approved for QPR_0_SFTP only: the portal refuses the password.
    async with web.client() as client:
        refused = await web.password_step(client, FACILITY)
        assert refused.status_code == 200 and "fehlgeschlagen" in refused.text
