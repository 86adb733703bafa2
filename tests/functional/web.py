"""The web portal over a running SFTP server's parts, and a browser-like HTTP client.

``Web`` builds the portal's app on the ``server`` fixture's database, blob store and
upload service (as ``serve`` does), with a clock the test moves; ``client`` talks to
it over HTTPS-shaped ASGI requests with a cookie jar, like one browser.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
from starlette.applications import Starlette

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock, SystemClock
from qprserver.security import totp
from qprserver.web.app import create_app
from qprserver.web.context import Portal
from tests.functional.harness import ADMIN, Server

PASSWORD = "ein langes Passwort 1"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


_DOCUMENT = re.compile(r'<a href="/dokumente/(\d+)" download>([^<]+)</a>')


def document_ids(page: str) -> dict[str, int]:
    """Names and delivery ids of the documents a page lists, in order."""
    return {html.unescape(name): int(ident) for ident, name in _DOCUMENT.findall(page)}


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "no CSRF token in page"
    return found.group(1)


@dataclass
class Web:
    server: Server
    portal: Portal
    clock: FixedClock
    app: Starlette

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="https://portal.test") as c:
            yield c

    async def set_password(self, ik: str, password: str = PASSWORD) -> None:
        async with self.server.db.session() as session:
            await accounts.set_password(session, ADMIN, self.clock.now(), ik, password)

    async def enrol(self, ik: str, password: str = PASSWORD) -> str:
        """Give an account a password and a second factor; its TOTP secret."""
        await self.set_password(ik, password)
        key = self.portal.totp_key
        assert key is not None
        async with self.server.db.session() as session:
            enrolment = await totp.enable(session, ADMIN, self.clock.now(), ik, key, "Test")
        return parse_qs(urlparse(enrolment.uri).query)["secret"][0]

    def code(self, secret: str) -> str:
        """The current code; the clock moves on a step, so the next code is a new one."""
        value = pyotp.TOTP(secret).at(self.clock.now())
        self.clock.advance(timedelta(seconds=30))
        return str(value)

    async def password_step(
        self, client: httpx.AsyncClient, ik: str, password: str = PASSWORD
    ) -> httpx.Response:
        form = await client.get("/anmelden")
        return await client.post(
            "/anmelden",
            data={"csrf": csrf_of(form.text), "ik": ik, "passwort": password},
        )

    async def login(self, client: httpx.AsyncClient, ik: str, secret: str) -> None:
        """Log in with password and code; the client then holds a full session."""
        first = await self.password_step(client, ik)
        assert first.status_code == 303 and first.headers["location"] == "/anmelden/code"
        page = await client.get("/anmelden/code")
        done = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": self.code(secret)}
        )
        assert done.status_code == 303 and done.headers["location"] == "/", done.text

    async def token(self, client: httpx.AsyncClient, path: str = "/konto") -> str:
        return csrf_of((await client.get(path)).text)


def make_web(server: Server) -> Web:
    ctx = server.listener.ctx
    clock = FixedClock(SystemClock().now())
    portal = Portal(server.settings, server.db, ctx.blobs, ctx.uploads, clock, ctx.totp_key)
    return Web(server, portal, clock, create_app(portal))


async def deposit(server: Server, depositor: str, name: str, data: bytes) -> None:
    """Upload a file over SFTP as the depositor (it is accepted when the client closes)."""
    async with (
        server.connect(depositor) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as handle,
    ):
        await handle.write(data)


async def approve_registration(web: Web) -> int:
    """The operator approves the one registration there is (``registration approve``), as
    asked for; its id."""
    from sqlalchemy import select

    from qprserver.accounts import review
    from qprserver.db.models import Registration

    async with web.server.db.session() as session:
        reg = await session.scalar(select(Registration))
        assert reg is not None
        await review.approve(
            session,
            ADMIN,
            web.clock.now(),
            reg.id,
            procedures=None,
            land=None,
            settings=web.portal.settings.registration,
            notifier=web.portal.notifier,
        )
        return reg.id
