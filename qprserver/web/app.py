"""The portal as an ASGI app, built by ``create_app`` from the process's parts.

Every response carries the security headers (``SecurityHeaders``): a
Content-Security-Policy that allows only the portal's own stylesheet and script and
``data:`` images (the enrolment QR code) — no inline script or style — and
``frame-ancestors 'none'``; ``nosniff``; no referrer; HSTS on HTTPS. There is no
administration here: provisioning stays in the CLI (operators only read the report
year's status, ``berichtsjahr.py``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qprserver.accounts.enums import Role
from qprserver.db.models import WebStage
from qprserver.web import (
    account,
    auth,
    berichtsjahr,
    correction,
    mailbox,
    meldungen,
    registration,
    uploads,
)
from qprserver.web.context import Portal
from qprserver.web.pages import current, not_found, page, see_other

CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


class SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not any(name == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                if https:
                    headers.append((b"strict-transport-security", HSTS.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


async def home(request: Request) -> Response:
    visit = await current(request)
    if visit is None or visit.session.stage is not WebStage.FULL:
        return see_other("/anmelden")
    if visit.account.has_role(Role.RECIPIENT):
        return see_other("/posteingang")
    if visit.account.has_role(Role.DEPOSITOR):
        return see_other("/hochladen")
    return see_other("/konto")


async def _not_found(request: Request, exc: Exception) -> Response:
    return not_found(request)


def create_app(portal: Portal) -> Starlette:
    """The portal's app over one process's parts."""
    routes = [
        Route("/", home, methods=["GET"]),
        Route("/anmelden", auth.login_form, methods=["GET"]),
        Route("/anmelden", auth.login, methods=["POST"]),
        Route("/anmelden/code", page(auth.code_form, stage=WebStage.CODE), methods=["GET"]),
        Route("/anmelden/code", page(auth.code, stage=WebStage.CODE), methods=["POST"]),
        Route("/einrichten", page(auth.enrol_form, stage=WebStage.ENROL), methods=["GET"]),
        Route("/einrichten", page(auth.enrol, stage=WebStage.ENROL), methods=["POST"]),
        Route("/abmelden", auth.logout, methods=["POST"]),
        *(Route(path, endpoint, methods=methods) for path, endpoint, methods in mailbox.ROUTES),
        *(Route(path, endpoint, methods=methods) for path, endpoint, methods in uploads.ROUTES),
        *(Route(path, endpoint, methods=methods) for path, endpoint, methods in account.ROUTES),
        *(
            Route(path, endpoint, methods=methods)
            for path, endpoint, methods in berichtsjahr.ROUTES
        ),
        *(Route(path, endpoint, methods=methods) for path, endpoint, methods in meldungen.ROUTES),
        *(
            Route(path, endpoint, methods=methods)
            for path, endpoint, methods in registration.ROUTES
        ),
        *(Route(path, endpoint, methods=methods) for path, endpoint, methods in correction.ROUTES),
        Mount(
            "/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static"
        ),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    app.state.portal = portal
    app.add_middleware(SecurityHeaders)
    return app
