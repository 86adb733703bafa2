"""The correction of a report registration's IK and Standort by the link of the
correction mail (Qb-R Anlage 2 Nr. 5; ``qb/correction.py``). Like every mailed link it
opens a page and acts only on the posted form, so a mail scanner uses up nothing; the
page shows what is registered and the mismatch reported, and keeps what was typed when
the change is refused.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from qprserver.accounts.enums import TokenPurpose
from qprserver.errors import InvalidInput
from qprserver.notify.qb_mails import QB_CORRECT_PATH
from qprserver.qb import correction
from qprserver.qb.calendar import calendar_for
from qprserver.security.tokens import INVALID
from qprserver.web.anonymous import anonymous_page, broken_link, link_token, note, posted_link
from qprserver.web.pages import portal_of

TEMPLATE = "berichtsjahr_korrigieren.html"


async def _form(
    request: Request, token: str, values: dict[str, str] | None, message: str = ""
) -> Response:
    """The form for the link's registration, or the note that the link no longer holds."""
    portal = portal_of(request)
    async with portal.db.read_session() as session:
        reg = await correction.pending(session, portal.clock.now(), token)
    if reg is None:
        status = 400 if values is not None else 404
        return note(
            request, "Korrektur nicht möglich", message or INVALID[TokenPurpose.QB_CORRECT], status
        )
    context = {
        "action": request.url.path,
        "year": reg.year,
        "hospital": reg.hospital,
        "ik": reg.ik,
        "site": reg.site,
        "mismatch": reg.mismatch or "",
        "until": f"{calendar_for(portal.settings.qb, reg.year).correction.end:%d.%m.%Y}",
        "values": values if values is not None else {"ik": reg.ik, "site": reg.site},
        "message": message,
    }
    return anonymous_page(request, TEMPLATE, context, status=400 if message else 200)


async def correct_form(request: Request) -> Response:
    token = link_token(request)
    if token is None:
        return broken_link(request)
    return await _form(request, token, None)


async def correct(request: Request) -> Response:
    portal = portal_of(request)
    posted = await posted_link(request)
    if isinstance(posted, Response):
        return posted
    token, values = posted
    try:
        async with portal.db.session() as session:
            reg = await correction.correct_by_link(
                session,
                portal.clock.now(),
                token,
                ik=values.get("ik", ""),
                site=values.get("site", ""),
                qb=portal.settings.qb,
                registration=portal.settings.registration,
                notifier=portal.notifier,
            )
            done = (
                f"Für das Berichtsjahr {reg.year} sind IK {reg.ik}, Standort {reg.site} "
                "registriert. Nach der Korrekturphase erhalten Sie eine Bestätigung mit allen "
                "registrierten Daten."
            )
            if reg.account_id is not None:
                login = f"{reg.ik}-{reg.site}"
                done += f" Das Konto dieser Registrierung meldet sich jetzt als {login} an."
    except InvalidInput as exc:
        typed = {"ik": values.get("ik", ""), "site": values.get("site", "")}
        return await _form(request, token, typed, str(exc))
    return note(request, "Angaben gespeichert", done)


ROUTES = [
    (QB_CORRECT_PATH + "{token}", correct_form, ["GET"]),
    (QB_CORRECT_PATH + "{token}", correct, ["POST"]),
]
