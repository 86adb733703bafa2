"""How a portal page is served: the session behind it, its CSRF check, its template.

``page`` wraps a handler for logged-in accounts: it finds the request's session
(``sessions.find``), sends anyone without a full login to the login, refuses a POST
whose form lacks the session's synchronizer token with 403 before the handler runs,
and translates the domain's ``NotFound`` into the same 404 page for every id that
is not the account's own.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from qprserver.accounts import websessions as sessions
from qprserver.accounts.enums import Role
from qprserver.accounts.websessions import Visit
from qprserver.db.models import WebStage
from qprserver.errors import NotFound
from qprserver.web.context import Portal

log = logging.getLogger(__name__)

COOKIE = "qpr_session"
# The login form's token before there is a session (double submit: cookie and field).
PRE_COOKIE = "qpr_login"
CSRF_FIELD = "csrf"
# The largest form body read (files go through ``uploads.py``, which streams them):
# 500 ticked documents and a key line fit many times over.
MAX_FORM_BYTES = 256 * 1024


class FormTooLarge(Exception):
    """A form body over ``MAX_FORM_BYTES``."""


async def read_form(request: Request) -> FormData:
    """An urlencoded form, read up to ``MAX_FORM_BYTES`` (FormTooLarge beyond); any
    other body reads as an empty form (its token is then missing: 403)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge
    if kind != "application/x-www-form-urlencoded":
        return FormData()
    text = body.decode("utf-8", "replace")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=2000)
    except ValueError:  # too many fields
        raise FormTooLarge from None
    fields: list[tuple[str, str | UploadFile]] = list(pairs)
    return FormData(fields)


templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_BERLIN = ZoneInfo("Europe/Berlin")


def _local(value: datetime | None) -> str:
    return value.astimezone(_BERLIN).strftime("%d.%m.%Y %H:%M") if value else ""


def _size(value: int) -> str:
    """A size as people read it: bytes below 1 KiB, else KiB, MiB or GiB with a comma."""
    if value < 1024:
        return f"{value} Bytes"
    amount = float(value)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            break
    return f"{amount:.1f} {unit}".replace(".", ",")


templates.env.filters["local"] = _local
templates.env.filters["size"] = _size


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def address(request: Request) -> str:
    """The client's address (uvicorn takes X-Forwarded-For from trusted proxies only)."""
    return request.client.host if request.client else ""


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    visit: Visit | None = None,
    status: int = 200,
    csrf: str | None = None,
) -> HTMLResponse:
    kinds = portal_of(request).settings.kinds
    values: dict[str, Any] = {
        "visit": visit,
        "csrf": csrf or (visit.session.csrf if visit else ""),
        "kinds": {name: kind.description or name for name, kind in kinds.items()},
    }
    if visit is not None:
        values["recipient"] = visit.account.has_role(Role.RECIPIENT)
        values["depositor"] = visit.account.has_role(Role.DEPOSITOR)
    values.update(context or {})
    response = templates.TemplateResponse(request, name, values, status_code=status)
    return response


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE, token, httponly=True, secure=is_https(request), samesite="strict", path="/"
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, httponly=True, secure=is_https(request), samesite="strict", path="/"
    )


def login_token(request: Request) -> tuple[str, bool]:
    """The login form's token: the browser's cookie, or a new one (True: to be set)."""
    token = request.cookies.get(PRE_COOKIE, "")
    if len(token) == 43:
        return token, False
    return secrets.token_urlsafe(32), True


def set_login_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        PRE_COOKIE, token, httponly=True, secure=is_https(request), samesite="strict", path="/"
    )


def token_ok(expected: str, given: object) -> bool:
    return bool(expected) and isinstance(given, str) and secrets.compare_digest(expected, given)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def forbidden(request: Request) -> HTMLResponse:
    return render(request, "fehler.html", {"title": "Anfrage abgelehnt", "code": 403}, status=403)


def too_large(request: Request) -> HTMLResponse:
    return render(request, "fehler.html", {"title": "Anfrage zu groß", "code": 413}, status=413)


def not_found(request: Request, visit: Visit | None = None) -> HTMLResponse:
    return render(
        request, "fehler.html", {"title": "Nicht gefunden", "code": 404}, visit=visit, status=404
    )


async def current(request: Request) -> Visit | None:
    """The request's session at any stage, or None."""
    portal = portal_of(request)
    visit, why = await sessions.find(
        portal.db, request.cookies.get(COOKIE), portal.clock.now(), portal.settings.web
    )
    if why not in (None, "unknown"):
        log.info("web session ended: %s", why)
    return visit


STEP_URL = {WebStage.CODE: "/anmelden/code", WebStage.ENROL: "/einrichten"}


@dataclass(frozen=True, slots=True)
class Call:
    """A logged-in request: the session, and the form of a POST (token checked)."""

    request: Request
    portal: Portal
    visit: Visit
    form: FormData | None


Handler = Callable[[Call], Awaitable[Response]]


def page(
    handler: Handler,
    *,
    stage: WebStage = WebStage.FULL,
    role: Role | None = None,
    streamed: bool = False,
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for sessions at ``stage`` (and accounts with ``role``).

    ``streamed``: the handler reads a POST's body itself and checks its token there
    (uploads: the token field comes before the files and is checked before any byte
    of them is stored).
    """

    async def endpoint(request: Request) -> Response:
        visit = await current(request)
        if visit is None:
            response: Response = see_other("/anmelden")
            if COOKIE in request.cookies:
                clear_session_cookie(request, response)
            return response
        if visit.session.stage is not stage:
            return see_other(STEP_URL.get(visit.session.stage, "/"))
        if role is not None and not visit.account.has_role(role):
            return not_found(request, visit)
        form = None
        if request.method == "POST" and not streamed:
            try:
                form = await read_form(request)
            except FormTooLarge:
                return too_large(request)
            if not token_ok(visit.session.csrf, form.get(CSRF_FIELD)):
                log.warning("POST %s without a valid CSRF token refused", request.url.path)
                return forbidden(request)
        try:
            return await handler(Call(request, portal_of(request), visit, form))
        except NotFound:
            return not_found(request, visit)

    return endpoint


def int_param(value: object) -> int | None:
    """A positive id from a path or form, else None (which the caller answers 404)."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    return None
