"""Konto: password, second factor, recovery codes, SSH keys, notifications, sessions.

Each change is the domain's function the CLI calls too (``accounts.service``,
``security.totp``), acting as the account itself. A new password ends every other
web session of the account and gives this browser a new session id.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from qprserver.accounts import service as accounts
from qprserver.accounts import websessions as sessions
from qprserver.audit.chain import Actor
from qprserver.db.models import WebSession, WebStage
from qprserver.errors import AlreadyExists, InvalidInput
from qprserver.security import totp
from qprserver.security.passwords import verify_password
from qprserver.web.auth import confirm_enrolment, enrolment_context, score_failure
from qprserver.web.pages import (
    Call,
    address,
    clear_session_cookie,
    page,
    render,
    see_other,
    set_session_cookie,
)

NOTES = {
    "passwort": "Das Passwort ist geändert. Alle anderen Sitzungen sind beendet.",
    "schluessel": "Der Schlüssel ist hinterlegt.",
    "entfernt": "Der Schlüssel ist entfernt.",
    "benachrichtigung": "Die Einstellungen sind gespeichert.",
    "faktor": "Der neue zweite Faktor ist eingerichtet.",
}


def _actor(call: Call) -> Actor:
    return Actor(call.visit.account.login, address(call.request))


async def _page(call: Call, message: str = "", status: int = 200) -> Response:
    portal = call.portal
    account = call.visit.account
    rows: list[WebSession] = await sessions.list_for(
        portal.db, account.id, portal.clock.now(), portal.settings.web
    )
    note = NOTES.get(call.request.query_params.get("hinweis", ""), "")
    return render(
        call.request,
        "konto.html",
        {
            "account": account,
            "keys": list(account.keys),
            "sessions": rows,
            "this_session": call.visit.session.id,
            "message": message,
            "note": note,
        },
        visit=call.visit,
        status=status,
    )


async def overview(call: Call) -> Response:
    return await _page(call)


async def change_password(call: Call) -> Response:
    assert call.form is not None
    portal, visit = call.portal, call.visit
    old = str(call.form.get("altes_passwort", ""))[:1024]
    new = str(call.form.get("neues_passwort", ""))[:1024]
    again = str(call.form.get("wiederholung", ""))[:1024]
    stored = visit.account.password.password_hash if visit.account.password else None
    async with portal.password_checks:
        ok = await asyncio.to_thread(verify_password, stored, old)
    if not ok:
        await score_failure(portal, address(call.request), visit.account)
        return await _page(call, "Das bisherige Passwort stimmt nicht.", 400)
    if new != again:
        return await _page(call, "Die beiden neuen Passwörter stimmen nicht überein.", 400)
    now = portal.clock.now()
    try:
        async with portal.db.session() as session:
            await accounts.set_password(session, _actor(call), now, visit.account.login, new)
    except InvalidInput as exc:
        return await _page(call, str(exc), 400)
    await sessions.end_all(portal.db, visit.account.id, keep=visit.session.id)
    token = await sessions.begin(
        portal.db,
        visit.account.id,
        WebStage.FULL,
        now,
        address=address(call.request),
        user_agent=call.request.headers.get("user-agent", ""),
        replaces=visit.session.id,
    )
    response = see_other("/konto?hinweis=passwort")
    set_session_cookie(call.request, response, token)
    return response


async def start_enrolment(call: Call) -> Response:
    key = call.portal.totp_key
    if key is None:
        return see_other("/konto")
    pending = key.encrypt(totp.new_secret().encode()).decode()
    await sessions.set_pending_totp(call.portal.db, call.visit.session.id, pending)
    return see_other("/konto/zweiter-faktor")


async def enrolment_form(call: Call) -> Response:
    pending = call.visit.session.pending_totp
    if pending is None or call.portal.totp_key is None:
        return see_other("/konto")
    context = enrolment_context(call.portal, call.visit.account.login, pending)
    action = "/konto/zweiter-faktor/bestaetigen"
    return render(call.request, "einrichten.html", {**context, "action": action}, visit=call.visit)


async def confirm(call: Call) -> Response:
    codes, answer = await confirm_enrolment(call, "/konto/zweiter-faktor/bestaetigen")
    if codes is None:
        assert answer is not None
        return answer
    return render(call.request, "codes.html", {"codes": codes, "first": False}, visit=call.visit)


async def recovery_codes(call: Call) -> Response:
    async with call.portal.db.session() as session:
        codes = await totp.renew_recovery_codes(
            session, _actor(call), call.portal.clock.now(), call.visit.account.login
        )
    return render(call.request, "codes.html", {"codes": codes, "first": False}, visit=call.visit)


async def add_key(call: Call) -> Response:
    assert call.form is not None
    line = str(call.form.get("schluessel", ""))[:16384]
    try:
        async with call.portal.db.session() as session:
            await accounts.add_key(
                session,
                _actor(call),
                call.portal.clock.now(),
                call.visit.account.login,
                line,
                call.portal.uploads.notifier,
            )
    except (InvalidInput, AlreadyExists) as exc:
        return await _page(call, str(exc), 400)
    return see_other("/konto?hinweis=schluessel")


async def remove_key(call: Call) -> Response:
    assert call.form is not None
    fingerprint = str(call.form.get("fingerabdruck", ""))[:100]
    async with call.portal.db.session() as session:
        await accounts.remove_key(
            session, _actor(call), call.portal.clock.now(), call.visit.account.login, fingerprint
        )
    return see_other("/konto?hinweis=entfernt")


async def notifications(call: Call) -> Response:
    assert call.form is not None
    async with call.portal.db.session() as session:
        await accounts.update_account(
            session,
            _actor(call),
            call.portal.clock.now(),
            call.visit.account.login,
            notify=call.form.get("benachrichtigung") == "ja",
            bundles=call.form.get("buendel") == "ja",
        )
    return see_other("/konto?hinweis=benachrichtigung")


async def end_everywhere(call: Call) -> Response:
    await sessions.end_all(call.portal.db, call.visit.account.id)
    response = see_other("/anmelden?abgemeldet")
    clear_session_cookie(call.request, response)
    return response


ROUTES = [
    ("/konto", page(overview), ["GET"]),
    ("/konto/passwort", page(change_password), ["POST"]),
    ("/konto/zweiter-faktor", page(start_enrolment), ["POST"]),
    ("/konto/zweiter-faktor", page(enrolment_form), ["GET"]),
    ("/konto/zweiter-faktor/bestaetigen", page(confirm), ["POST"]),
    ("/konto/wiederherstellungscodes", page(recovery_codes), ["POST"]),
    ("/konto/schluessel", page(add_key), ["POST"]),
    ("/konto/schluessel/entfernen", page(remove_key), ["POST"]),
    ("/konto/benachrichtigungen", page(notifications), ["POST"]),
    ("/konto/abmelden-ueberall", page(end_everywhere), ["POST"]),
]
