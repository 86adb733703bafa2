"""A participant's way in, in the browser: the registration form, the link of the
confirmation mail, the first password, and a forgotten password; and a hospital's
registration of a report for a Qb-R report year with the link that confirms it.

The forms before any login carry the same double-submit token as the login form
(cookie and field). Links from mails open a page with a button rather than acting on
GET, so a mail scanner that follows links uses up nothing. The first password starts
a session that can only enrol the second factor (``auth.enrol``), after which the
application goes to the operator. Answers never tell whether an IK or an address is
known: a registration for a known IK and a reset for an unknown address get the same
page as the real thing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from qprserver.accounts import activation, recovery, registration
from qprserver.accounts import websessions as sessions
from qprserver.accounts.registration import RegistrationForm
from qprserver.db.models import Account, WebStage
from qprserver.errors import InvalidInput, TooManyRequests
from qprserver.notify.qb_mails import QB_CONFIRM_PATH
from qprserver.qb import registrations as qb_registrations
from qprserver.qb.accounts import login_name
from qprserver.security import totp
from qprserver.web.anonymous import (
    anonymous_page,
    broken_link,
    link_token,
    note,
    posted_form,
    posted_link,
)
from qprserver.web.context import Portal
from qprserver.web.pages import (
    STEP_URL,
    Call,
    address,
    clear_session_cookie,
    forbidden,
    portal_of,
    render,
    see_other,
    set_session_cookie,
)

SENT = (
    "Vielen Dank. Wenn die Angaben stimmen, erhalten Sie in wenigen Minuten eine E-Mail mit "
    "einem Link zur Bestätigung Ihrer Adresse. Der Link gilt {hours} Stunden."
)
RESET_SENT = (
    "Wenn zu dieser Adresse ein freigeschalteter Zugang gehört, erhalten Sie in wenigen "
    "Minuten eine E-Mail mit einem Link zum Festlegen eines neuen Passworts."
)
NO_SECOND_FACTOR = (
    "Der zweite Faktor lässt sich derzeit nicht einrichten; bitte wenden Sie sich an den Betreiber."
)
FIELDS = ("ik", "institution", "contact", "email", "phone", "street", "postcode", "city")


async def register_form(request: Request) -> Response:
    return anonymous_page(request, "registrieren.html", {"values": {}})


async def register(request: Request) -> Response:
    portal = portal_of(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    form = RegistrationForm(
        **{key: values.get(key, "") for key in FIELDS},
        roles=tuple(r for r in values["roles"].split(",") if r),
        procedures=tuple(p for p in values["procedures"].split(",") if p),
        ssh_key=values.get("ssh_key", ""),
    )
    settings = portal.settings.registration
    try:
        async with portal.db.session() as session:
            await registration.register(
                session,
                portal.clock.now(),
                form,
                address=address(request),
                settings=settings,
                notifier=portal.notifier,
            )
    except InvalidInput as exc:
        context = {"values": values, "message": str(exc)}
        return anonymous_page(request, "registrieren.html", context, status=400)
    except TooManyRequests as exc:
        return note(request, "Bitte später erneut versuchen", str(exc), status=429)
    return note(request, "Registrierung eingegangen", SENT.format(hours=settings.confirm_hours))


async def resend(request: Request) -> Response:
    """A new confirmation link, for the IK and address of an unconfirmed registration."""
    portal = portal_of(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    settings = portal.settings.registration
    async with portal.db.session() as session:
        await registration.resend_confirmation(
            session,
            portal.clock.now(),
            ik=values.get("ik", ""),
            email=values.get("email", ""),
            settings=settings,
            notifier=portal.notifier,
        )
    return note(request, "Link angefordert", SENT.format(hours=settings.confirm_hours))


async def confirm_form(request: Request) -> Response:
    if link_token(request) is None:
        return broken_link(request)
    return anonymous_page(request, "bestaetigen.html", {"action": request.url.path})


async def confirm(request: Request) -> Response:
    portal = portal_of(request)
    posted = await posted_link(request)
    if isinstance(posted, Response):
        return posted
    token, _ = posted
    try:
        async with portal.db.session() as session:
            password_token = await registration.confirm(
                session,
                portal.clock.now(),
                token,
                settings=portal.settings.registration,
                notifier=portal.notifier,
            )
    except InvalidInput as exc:
        return note(request, "Bestätigung nicht möglich", str(exc), status=400)
    return see_other(f"/registrierung/passwort/{password_token}")


async def password_form(request: Request) -> Response:
    if link_token(request) is None:
        return broken_link(request)
    return anonymous_page(request, "passwort_festlegen.html", {"action": request.url.path})


def _new_password(values: dict[str, str]) -> str:
    password = values.get("passwort", "")
    if password != values.get("wiederholung", ""):
        raise InvalidInput("Die beiden Passwörter stimmen nicht überein.")
    return password


async def set_password(request: Request) -> Response:
    """The first password: then a session that can only enrol the second factor."""
    portal = portal_of(request)
    posted = await posted_link(request)
    if isinstance(posted, Response):
        return posted
    token, values = posted
    now = portal.clock.now()
    try:
        password = _new_password(values)
        async with portal.db.session() as session:
            account = await registration.set_first_password(session, now, token, password)
            account_id = account.id
    except InvalidInput as exc:
        context = {"action": request.url.path, "message": str(exc)}
        return anonymous_page(request, "passwort_festlegen.html", context, status=400)
    if portal.totp_key is None:
        return note(request, "Passwort gespeichert", NO_SECOND_FACTOR, status=503)
    pending = portal.totp_key.encrypt(totp.new_secret().encode()).decode()
    session_token = await sessions.begin(
        portal.db,
        account_id,
        WebStage.ENROL,
        now,
        address=address(request),
        user_agent=request.headers.get("user-agent", ""),
        pending_totp=pending,
    )
    response = see_other(STEP_URL[WebStage.ENROL])
    set_session_cookie(request, response, session_token)
    return response


async def forgot_form(request: Request) -> Response:
    return anonymous_page(request, "passwort_vergessen.html")


async def forgot(request: Request) -> Response:
    portal = portal_of(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    async with portal.db.session() as session:
        await recovery.request_password_reset(
            session,
            portal.clock.now(),
            values.get("email", ""),
            settings=portal.settings.registration,
            notifier=portal.notifier,
        )
    return note(request, "Link angefordert", RESET_SENT)


async def reset_form(request: Request) -> Response:
    if link_token(request) is None:
        return broken_link(request)
    return anonymous_page(
        request, "passwort_festlegen.html", {"action": request.url.path, "reset": True}
    )


async def reset(request: Request) -> Response:
    """A new password by a reset link: every open web session of the account ends."""
    portal = portal_of(request)
    posted = await posted_link(request)
    if isinstance(posted, Response):
        return posted
    token, values = posted
    try:
        password = _new_password(values)
        async with portal.db.session() as session:
            account = await recovery.reset_password(session, portal.clock.now(), token, password)
            account_id = account.id
    except InvalidInput as exc:
        context = {"action": request.url.path, "message": str(exc), "reset": True}
        return anonymous_page(request, "passwort_festlegen.html", context, status=400)
    await sessions.end_all(portal.db, account_id)
    return see_other("/anmelden?neu")


REPORT_FIELDS = ("ik", "site", "hospital", "contact", "email", "phone", "basis")
REPORT_SENT = (
    "Vielen Dank. Sie erhalten in wenigen Minuten eine E-Mail mit einem Link zur Bestätigung "
    "der Registrierung. Der Link gilt {hours} Stunden."
)


async def report_register_form(request: Request) -> Response:
    return anonymous_page(request, "berichtsjahr_registrieren.html", {"values": {}})


async def report_register(request: Request) -> Response:
    """A report's registration (Qb-R): IK + Standort of a report year."""
    portal = portal_of(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    settings = portal.settings.registration
    try:
        year = values.get("year", "").strip()
        if not (year.isdigit() and len(year) == 4):
            raise InvalidInput("Berichtsjahr: vier Ziffern, z. B. 2025")
        form = qb_registrations.ReportRegistrationForm(
            year=int(year),
            **{key: values.get(key, "") for key in REPORT_FIELDS},
            further_iks=tuple(values.get("further_iks", "").replace(",", " ").split()),
        )
        async with portal.db.session() as session:
            await qb_registrations.register(
                session,
                portal.clock.now(),
                form,
                qb=portal.settings.qb,
                settings=settings,
                notifier=portal.notifier,
                address=address(request),
            )
    except InvalidInput as exc:
        context = {"values": values, "message": str(exc)}
        return anonymous_page(request, "berichtsjahr_registrieren.html", context, status=400)
    except TooManyRequests as exc:
        return note(request, "Bitte später erneut versuchen", str(exc), status=429)
    return note(
        request, "Registrierung eingegangen", REPORT_SENT.format(hours=settings.confirm_hours)
    )


REPORT_NEXT = "Danach nimmt die Annahmestelle den Qualitätsbericht für diese Registrierung an."


async def report_confirm_form(request: Request) -> Response:
    """The link of a report registration's mail (Qb-R): a button, not an action."""
    if link_token(request) is None:
        return note(request, "Link ungültig", "Dieser Link ist unvollständig.", status=404)
    context = {"action": request.url.path, "next_step": REPORT_NEXT}
    return anonymous_page(request, "bestaetigen.html", context)


async def report_confirm(request: Request) -> Response:
    portal = portal_of(request)
    token = link_token(request)
    values = await posted_form(request)
    if values is None:
        return forbidden(request)
    if token is None:
        return note(request, "Link ungültig", "Dieser Link ist unvollständig.", status=404)
    try:
        async with portal.db.session() as session:
            reg = await qb_registrations.confirm(
                session,
                portal.clock.now(),
                token,
                settings=portal.settings.registration,
                notifier=portal.notifier,
            )
            done = (
                f"Die Registrierung des Qualitätsberichts {reg.year} für IK {reg.ik}, "
                f"Standort {reg.site} ist bestätigt. Ihr Benutzername ist "
                f"{login_name(reg.ik, reg.site)}; den Link zum Festlegen des Passworts "
                "erhalten Sie per E-Mail, falls dieser Zugang noch keines hat."
            )
    except InvalidInput as exc:
        return note(request, "Bestätigung nicht möglich", str(exc), status=400)
    return note(request, "Registrierung bestätigt", done)


ROUTES = [
    ("/registrieren", register_form, ["GET"]),
    ("/registrieren", register, ["POST"]),
    ("/registrieren/erneut", resend, ["POST"]),
    ("/registrierung/bestaetigen/{token}", confirm_form, ["GET"]),
    ("/registrierung/bestaetigen/{token}", confirm, ["POST"]),
    ("/registrierung/passwort/{token}", password_form, ["GET"]),
    ("/registrierung/passwort/{token}", set_password, ["POST"]),
    ("/passwort/vergessen", forgot_form, ["GET"]),
    ("/passwort/vergessen", forgot, ["POST"]),
    ("/passwort/neu/{token}", reset_form, ["GET"]),
    ("/passwort/neu/{token}", reset, ["POST"]),
    ("/berichtsjahr/registrieren", report_register_form, ["GET"]),
    ("/berichtsjahr/registrieren", report_register, ["POST"]),
    (QB_CONFIRM_PATH + "{token}", report_confirm_form, ["GET"]),
    (QB_CONFIRM_PATH + "{token}", report_confirm, ["POST"]),
]


# -- steps of the login for registrants (called by ``auth``) ----------------------


async def awaits_letter(portal: Portal, account: Account) -> bool:
    """True when the account was approved and waits for the code of its letter."""
    async with portal.db.read_session() as session:
        return await activation.awaits_letter(session, account)


async def activate(call: Call, code: str) -> bool:
    """The letter's code of an approved registration: the account becomes usable."""
    portal, visit = call.portal, call.visit
    try:
        async with portal.db.session() as session:
            account = await activation.activate(session, portal.clock.now(), visit.account.id, code)
            visit.account.status = account.status
    except InvalidInput:
        return False
    return True


async def applied(call: Call, codes: list[str]) -> Response:
    """A registrant's second factor is set: the application goes to the operator, and
    the session ends (the account logs in once it is freigeschaltet)."""
    portal, visit = call.portal, call.visit
    async with portal.db.session() as session:
        await registration.apply(session, portal.clock.now(), visit.account.id, portal.notifier)
    await sessions.end(portal.db, visit.session.id)
    response = render(call.request, "antrag.html", {"codes": codes})
    clear_session_cookie(call.request, response)
    return response
