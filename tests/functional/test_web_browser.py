"""The portal in a real browser (Debian's Chromium, headless, driven by Playwright):
the path of a recipient and of a depositor, the refusals a browser meets, axe-core
on every page visited, and the screenshots the README shows.

The server is the real listener: uvicorn over HTTPS (a self-signed certificate made
as ``init`` makes it) on a free port, in this test's event loop, on the parts of a
running SFTP server, as ``serve`` runs it.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, async_playwright

from qprserver.db.engine import Database
from qprserver.ik import check_digit
from qprserver.security.tlscert import ensure_self_signed
from qprserver.sockets import listening_sockets
from qprserver.web.server import WebListener
from tests.conftest import QB_DATA
from tests.functional.harness import HOSPITAL, IN_WINDOW, LV_SH, REPORT, pdf_bytes, start_qb_server
from tests.functional.web import PASSWORD, Web, deposit, make_web

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
FACILITY_SH = "51011234" + str(check_digit("51011234"))
WCAG_A_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(
        not (QB_DATA / REPORT).exists(), reason="G-BA test data (../shared/data/qb) not present"
    ),
]


@dataclass
class Site:
    web: Web
    url: str
    axe: Axe = field(default_factory=Axe)
    violations: dict[str, list[str]] = field(default_factory=dict)
    pages: list[str] = field(default_factory=list)

    async def check(self, page: Page) -> None:
        """axe-core (level A and AA rules) on the page as it is now."""
        results = await self.axe.run(
            page, options={"runOnly": {"type": "tag", "values": WCAG_A_AA}}
        )
        where = page.url.removeprefix(self.url)
        self.pages.append(where)
        found = [v["id"] for v in results.response["violations"]]
        if found:
            self.violations[where] = found

    async def go(self, page: Page, path: str) -> None:
        await page.goto(self.url + path)
        await self.check(page)

    async def login(self, page: Page, ik: str, secret: str, password: str) -> None:
        await self.go(page, "/anmelden")
        await page.get_by_label("IK (9 Ziffern)").fill(ik)
        await page.get_by_label("Passwort").fill(password)
        await page.get_by_role("button", name="Weiter").click()
        await page.wait_for_url("**/anmelden/code")
        await self.check(page)
        await page.get_by_label("Code").fill(self.web.code(secret))
        await page.get_by_role("button", name="Anmelden").click()
        await page.wait_for_url(lambda url: not url.endswith("/anmelden/code"))
        await self.check(page)


@pytest.fixture
async def site(tmp_path: Path, db: Database) -> AsyncIterator[Site]:
    srv = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    await srv.add_route("pruefbericht", "SH", LV_SH)
    web = make_web(srv)
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    ensure_self_signed(cert, key, "127.0.0.1", web.clock.now())
    settings = web.portal.settings
    web.portal.settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"tls_cert": cert, "tls_key": key})}
    )
    listener = WebListener(web.portal)
    await listener.start(listening_sockets("127.0.0.1", 0)[0])
    try:
        yield Site(web, f"https://127.0.0.1:{listener.port}")
    finally:
        await listener.stop()
        await srv.listener.stop(grace=0)


async def _download(page: Page, action: Any) -> bytes:
    async with page.expect_download() as info:
        await action()
    download = await info.value
    return await asyncio.to_thread(Path(await download.path()).read_bytes)


async def test_a_recipient_and_a_depositor_use_the_portal_in_a_real_browser(site: Site) -> None:
    web = site.web
    files = {f"{FACILITY_SH}_bericht_{i}.pdf": pdf_bytes(40_000 + i, bytes([i])) for i in range(3)}
    for name, data in files.items():
        await deposit(web.server, HOSPITAL, name, data)
    web.clock.advance(IN_WINDOW - web.clock.now())
    await web.set_password(LV_SH)
    depositor = await web.enrol(HOSPITAL)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = await browser.new_context(ignore_https_errors=True, locale="de-DE")
        page = await context.new_page()

        # The recipient has a password, no key and no second factor yet: it enrols
        # first (a wrong code is refused), then sees its Posteingang.
        await site.go(page, "/anmelden")
        await page.screenshot(path=SCREENSHOTS / "anmelden.png", full_page=True)
        await page.get_by_label("IK (9 Ziffern)").fill(LV_SH)
        await page.get_by_label("Passwort").fill(PASSWORD)
        await page.get_by_role("button", name="Weiter").click()
        await page.wait_for_url("**/einrichten")
        await site.check(page)
        secret = (await page.locator("code.geheim").inner_text()).replace(" ", "")
        await page.get_by_label("Code aus der App").fill("000000")
        await page.get_by_role("button", name="Bestätigen").click()
        await page.get_by_text("Der Code wurde nicht angenommen").wait_for()
        await site.check(page)
        await page.get_by_label("Code aus der App").fill(web.code(secret))
        await page.get_by_role("button", name="Bestätigen").click()
        await page.get_by_role("heading", name="Wiederherstellungscodes").wait_for()
        await site.check(page)
        await page.get_by_role("link", name="Weiter").click()
        await page.wait_for_url("**/posteingang")
        await site.check(page)
        assert page.url.endswith("/posteingang")
        for name in files:
            await page.get_by_role("link", name=name).wait_for()
        await page.screenshot(path=SCREENSHOTS / "posteingang.png", full_page=True)

        # One download, bytes as deposited.
        first = next(iter(files))
        got = await _download(page, page.get_by_role("link", name=first).click)
        assert got == files[first]

        # Three as one ZIP.
        for name in files:
            await page.get_by_label(f"{name} auswählen").check()
        archive = await _download(
            page, page.get_by_role("button", name="Auswahl als ZIP herunterladen").click
        )
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            assert {n: z.read(n) for n in z.namelist()} == files

        # Acknowledge one; it is in the Archiv.
        await page.get_by_label(f"{first} auswählen").check()
        await page.get_by_role("button", name="Auswahl als abgerufen markieren").click()
        await page.get_by_text("als abgerufen markiert").wait_for()
        await site.check(page)
        assert await page.get_by_role("link", name=first).count() == 0
        await site.go(page, "/archiv")
        await page.get_by_role("link", name=first).wait_for()
        await site.go(page, "/buendel")
        await site.go(page, "/konto")

        # A form without its CSRF token is refused with 403.
        await page.evaluate(
            'document.querySelector(\'form[action="/konto/benachrichtigungen"] '
            "input[name=csrf]').remove()"
        )
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Speichern").click()
        assert (await answer.value).status == 403
        await page.get_by_text("Anfrage abgelehnt").wait_for()
        await site.check(page)

        # Log out; the cookie from before is refused afterwards.
        await site.go(page, "/konto")
        before = await context.cookies()
        await page.get_by_role("button", name="Abmelden", exact=True).click()
        await page.wait_for_url("**/anmelden?abgemeldet")
        await site.check(page)
        await context.add_cookies(before)  # type: ignore[arg-type]
        await page.goto(site.url + "/posteingang")
        assert page.url.endswith("/anmelden")

        # The depositor uploads a PDF and a quality report and reads the protocol.
        await context.clear_cookies()
        await site.login(page, HOSPITAL, depositor, PASSWORD)
        assert page.url.endswith("/hochladen")
        pdf = pdf_bytes(5000, b"upload")
        await page.get_by_label("Dateien (höchstens 20)").set_input_files(
            [
                {"name": f"{FACILITY_SH}_neu.pdf", "mimeType": "application/pdf", "buffer": pdf},
                {
                    "name": REPORT,
                    "mimeType": "text/xml",
                    "buffer": (QB_DATA / REPORT).read_bytes(),
                },
            ]
        )
        await page.get_by_role("button", name="Hochladen").click()
        await page.get_by_role("heading", name="Ergebnis des Hochladens").wait_for()
        await page.get_by_role("heading", name=f"{REPORT}: angenommen").wait_for()
        await page.get_by_role("heading", name=f"{FACILITY_SH}_neu.pdf: angenommen").wait_for()
        await site.check(page)
        await page.screenshot(path=SCREENSHOTS / "protokoll.png", full_page=True)
        await site.go(page, "/lieferungen")
        await page.get_by_text(f"{LV_SH}: ").first.wait_for()
        await site.go(page, "/protokolle")
        # Guards the guard: axe does report a field without a label.
        await page.evaluate(
            "document.querySelector('main').append(document.createElement('input'))"
        )
        unlabelled = await site.axe.run(
            page, options={"runOnly": {"type": "tag", "values": WCAG_A_AA}}
        )
        assert "label" in [v["id"] for v in unlabelled.response["violations"]]
        await browser.close()

    print("axe-core (WCAG 2.1 A/AA) on", len(site.pages), "pages:", ", ".join(site.pages))
    assert len(site.pages) >= 12
    assert site.violations == {}, site.violations
