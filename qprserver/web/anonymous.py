"""Pages before any login: the double-submit token of their forms, the tokens of mailed
links, and the short notes they answer with (registration, password reset, report
registration all use these)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from qprserver.web.pages import (
    CSRF_FIELD,
    forbidden,
    login_token,
    render,
    set_login_cookie,
    token_ok,
)

TOKEN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def anonymous_page(
    request: Request, template: str, context: Mapping[str, object] | None = None, status: int = 200
) -> Response:
    """A page before any login, with the double-submit token set where missing."""
    token, new = login_token(request)
    response = render(request, template, dict(context or {}), csrf=token, status=status)
    if new:
        set_login_cookie(request, response, token)
    return response


def note(request: Request, title: str, message: str, status: int = 200) -> Response:
    return anonymous_page(request, "hinweis.html", {"title": title, "message": message}, status)


async def posted_form(request: Request) -> dict[str, str] | None:
    """The posted form's fields, or None when its token is wrong."""
    form = await request.form()
    if not token_ok(request.cookies.get("qpr_login", ""), form.get(CSRF_FIELD)):
        return None
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key not in values:
            values[key] = value[:2000]
    values["roles"] = ",".join(v for v in form.getlist("rolle") if isinstance(v, str))
    values["procedures"] = ",".join(v for v in form.getlist("verfahren") if isinstance(v, str))
    return values


def link_token(request: Request) -> str | None:
    token = str(request.path_params.get("token", ""))
    return token if 20 <= len(token) <= 100 and set(token) <= TOKEN_CHARS else None


def broken_link(request: Request) -> Response:
    return note(request, "Link ungültig", "Dieser Link ist unvollständig.", status=404)


async def posted_link(request: Request) -> tuple[str, dict[str, str]] | Response:
    """The token of a mailed link and the form posted to it, or the answer to a bad one."""
    token = link_token(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    if token is None:
        return broken_link(request)
    return token, values
