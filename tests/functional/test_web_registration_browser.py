"""A participant's whole way in, in a real browser, with the mails caught by a real
SMTP server: register, open the mailed link, set the password, enrol TOTP, get
approved, enter the letter's code, then download a document about the institution.
axe-core checks every page; the README's registration screenshots come from here."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import urlparse

from playwright.async_api import async_playwright

from qprserver.accounts import activation
from qprserver.ik import check_digit
from qprserver.notify import outbox
from qprserver.notify.smtp import SmtpMailer
from tests.functional.harness import ADMIN, HOSPITAL, pdf_bytes
from tests.functional.smtp import SmtpServer
from tests.functional.test_web_browser import (
    CHROMIUM,
    SCREENSHOTS,
    Site,
    _download,
    pytestmark,
    site,
)
from tests.functional.web import PASSWORD, approve_registration, deposit

__all__ = ["pytestmark", "site"]  # the browser marks and the portal fixture, shared

# A nursing home in SH: the hospital's test set-up routes its documents there.
FACILITY = "51011235" + str(check_digit("51011235"))
EMAIL = "frieda@deich.example.org"


async def _mails(site: Site, smtp: SmtpServer) -> list[EmailMessage]:
    """Send what the outbox holds to the SMTP server; the messages the registrant got."""
    settings = site.web.portal.settings.mail.model_copy(update={"smtp_port": smtp.port})
    await outbox.send_pending(
        site.web.server.db, SmtpMailer(settings), settings, site.web.clock.now()
    )
    return [m for m in smtp.collector.messages if m["To"] == EMAIL]


def _link(site: Site, message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(r"https?://\S+", body.get_content())
    assert found is not None
    return site.url + urlparse(found.group(0)).path


async def test_a_participant_registers_is_approved_and_collects_in_a_real_browser(
    site: Site, smtp: SmtpServer
) -> None:
    web = site.web
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = await browser.new_context(ignore_https_errors=True, locale="de-DE")
        page = await context.new_page()

        await site.go(page, "/anmelden")
        await page.get_by_role("link", name="Noch kein Zugang? Registrieren").click()
        await page.wait_for_url("**/registrieren")
        await site.check(page)
        await page.get_by_label("IK der Einrichtung (9 Ziffern)").fill(FACILITY)
        await page.get_by_label("Name der Einrichtung").fill("Haus am Deich")
        await page.get_by_label("Straße und Hausnummer").fill("Deichweg 1")
        await page.get_by_label("Postleitzahl").fill("24103")
        await page.get_by_label("Ort").fill("Kiel")
        await page.get_by_label("Ansprechperson").fill("Frieda Muster")
        await page.get_by_label("E-Mail-Adresse", exact=True).fill(EMAIL)
        await page.get_by_label("Telefon").fill("0431 123-45")
        await page.screenshot(path=SCREENSHOTS / "registrieren.png", full_page=True)
        await page.get_by_role("button", name="Registrierung absenden").click()
        await page.get_by_role("heading", name="Registrierung eingegangen").wait_for()
        await site.check(page)

        [confirm] = await _mails(site, smtp)
        await site.go(page, urlparse(_link(site, confirm)).path)
        await page.get_by_role("button", name="Adresse bestätigen").click()
        await page.wait_for_url("**/registrierung/passwort/**")
        await site.check(page)
        await page.get_by_label("Passwort", exact=True).fill(PASSWORD)
        await page.get_by_label("Passwort wiederholen").fill(PASSWORD)
        await page.get_by_role("button", name="Speichern").click()
        await page.wait_for_url("**/einrichten")
        await site.check(page)
        secret = (await page.locator("code.geheim").inner_text()).replace(" ", "")
        await page.get_by_label("Code aus der App").fill(web.code(secret))
        await page.get_by_role("button", name="Bestätigen").click()
        await page.get_by_role("heading", name="Antrag eingereicht").wait_for()
        await site.check(page)
        await page.screenshot(path=SCREENSHOTS / "antrag.png", full_page=True)

        # The operator approves (``registration approve``); the status mail arrives.
        registration_id = await approve_registration(web)
        async with web.server.db.session() as session:
            letter = await activation.issue_letter(
                session, ADMIN, web.clock.now(), registration_id, web.portal.settings.registration
            )
        subjects = [m["Subject"] for m in await _mails(site, smtp)]
        assert subjects[-1] == f"QPR-Portal: Zugang freigeschaltet (IK {FACILITY})"
        assert len(subjects) == 4  # confirm, password link, applied, approved: each once
        assert len(await _mails(site, smtp)) == 4

        # First login: app code and the letter's code; then a document about the home.
        await site.go(page, "/anmelden")
        await page.get_by_label("IK (9 Ziffern)").fill(FACILITY)
        await page.get_by_label("Passwort").fill(PASSWORD)
        await page.get_by_role("button", name="Weiter").click()
        await page.wait_for_url("**/anmelden/code")
        await site.check(page)
        await page.get_by_label("Code", exact=True).fill(web.code(secret))
        await page.get_by_label("Aktivierungscode aus dem Brief").fill(letter.code)
        await page.get_by_role("button", name="Anmelden").click()
        await page.wait_for_url("**/posteingang")
        data = pdf_bytes(30_000, b"deich")
        name = f"{FACILITY}_bericht.pdf"
        await deposit(web.server, HOSPITAL, name, data)
        await site.go(page, "/posteingang")
        got = await _download(page, page.get_by_role("link", name=name).click)
        assert got == data
        await browser.close()

    assert site.violations == {}, site.violations
