"""Logging in to the portal: login name (the IK, or ``<IK>-<Standort>`` for a report
registration's account) and password, then a TOTP or recovery code; enrolment
of a second factor for accounts that have none; logging out.

Whether an account may log in is the login policy's answer (``access.may_log_in``
with ``Channel.WEB``, which always asks for two factors). Its one exception here:
an account refused only for lacking a second factor is let into enrolment after
its password, since the portal is where it gets one. Wrong passwords and codes
score in the shared ``bans`` like on the SSH edge: against the address always,
against the account for guessed secrets; a banned account's password and codes are
not accepted. Every refusal gives the same page and spends the same password check,
so no answer tells whether an IK exists.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload
from starlette.requests import Request
from starlette.responses import Response

from qprserver.accounts import access
from qprserver.accounts import sessions as login_sessions
from qprserver.accounts import websessions as sessions
from qprserver.accounts.enums import AccountStatus, Channel
from qprserver.accounts.fields import is_login
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.engine import Reads
from qprserver.db.models import Account, WebStage
from qprserver.security import bans, totp
from qprserver.security.passwords import verify_password
from qprserver.web import registration as registration_pages
from qprserver.web.context import Portal
from qprserver.web.pages import (
    CSRF_FIELD,
    PRE_COOKIE,
    STEP_URL,
    Call,
    FormTooLarge,
    address,
    clear_session_cookie,
    current,
    forbidden,
    login_token,
    portal_of,
    read_form,
    render,
    see_other,
    set_login_cookie,
    set_session_cookie,
    token_ok,
    too_large,
)

log = logging.getLogger(__name__)

FAILED = "Anmeldung fehlgeschlagen. Bitte Benutzername (IK) und Passwort prüfen."
WRONG_CODE = "Der Code wurde nicht angenommen. Bitte den aktuellen Code eingeben."
BANNED = "Zu viele fehlgeschlagene Anmeldungen. Bitte später erneut versuchen."

_ACCOUNT_AT_LOGIN = (
    select(Account)
    .where(Account.login == bindparam("login"))
    .options(selectinload(Account.password))
)


class _LoginSessions:
    """The policy's session count: the account's logins on live nodes."""

    async def count_open(self, reads: Reads, account_id: int, now: datetime) -> int:
        return await login_sessions.count_open(reads, account_id, now)


async def score_failure(portal: Portal, where: str, account: Account | None) -> None:
    """A failed attempt: against the address, and a guessed secret against the account."""
    if bans.allowlisted(where, portal.settings.security):
        return
    keys = [bans.address_key(where)]
    if account is not None:
        keys.append(bans.account_key(account.login))
    newly = await bans.record_failure(portal.db, keys, portal.clock.now(), portal.settings.security)
    for key in newly:
        log.warning("banned %s after repeated failed logins", key)


async def _banned(portal: Portal, where: str, login: str) -> set[str]:
    if bans.allowlisted(where, portal.settings.security):
        return set()
    keys = [bans.address_key(where)]
    if is_login(login):
        keys.append(bans.account_key(login))
    return await bans.banned_keys(portal.db, keys, portal.clock.now())


def _login_page(request: Request, message: str = "", status: int = 200) -> Response:
    token, new = login_token(request)
    response = render(request, "anmelden.html", {"message": message}, csrf=token, status=status)
    if new:
        set_login_cookie(request, response, token)
    return response


async def login_form(request: Request) -> Response:
    visit = await current(request)
    # A login under way (perhaps one planted by someone else) is no reason to skip
    # the form: a new password step replaces it.
    if visit is not None and visit.session.stage is WebStage.FULL:
        return see_other("/")
    note = ""
    if "abgemeldet" in request.query_params:
        note = "Sie wurden abgemeldet."
    elif "neu" in request.query_params:
        note = "Ihr neues Passwort ist gespeichert. Bitte melden Sie sich an."
    return _login_page(request, note)


async def login(request: Request) -> Response:
    """The first factor: login name (field ``ik``) and password."""
    portal = portal_of(request)
    try:
        form = await read_form(request)
    except FormTooLarge:
        return too_large(request)
    if not token_ok(request.cookies.get(PRE_COOKIE, ""), form.get(CSRF_FIELD)):
        return forbidden(request)
    ik = str(form.get("ik", "")).strip()[:20]
    password = str(form.get("passwort", ""))[:1024]
    where = address(request)
    now = portal.clock.now()
    banned = await _banned(portal, where, ik)
    if bans.address_key(where) in banned:
        return _login_page(request, BANNED, status=429)
    decision: access.Decision | None = None
    if is_login(ik):

        async def decide(reads: Reads) -> access.Decision:
            account = await reads.scalar(_ACCOUNT_AT_LOGIN, {"login": ik})
            return await access.may_log_in(
                reads,
                account,
                channel=Channel.WEB,
                address=where,
                now=now,
                security=portal.settings.security,
                second_factor_ready=portal.totp_key is not None,
                open_sessions=_LoginSessions(),
            )

        decision = await portal.db.quick_read(decide)
    account = decision.account if decision is not None else None
    enrol = (
        decision is not None
        and account is not None
        and decision.refusal is access.Refusal.NO_SECOND_FACTOR
        and account.totp_secret is None
        and portal.totp_key is not None
    )
    # Approved by the operator, waiting for the letter's code: it is asked for with the
    # TOTP code, and the account is usable once it is entered.
    letter = (
        decision is not None
        and account is not None
        and decision.refusal is access.Refusal.PENDING
        and account.totp_secret is not None
        and await registration_pages.awaits_letter(portal, account)
    )
    usable = decision is not None and (decision.allowed or enrol or letter)
    stored = account.password.password_hash if usable and account and account.password else None
    async with portal.password_checks:
        ok = await asyncio.to_thread(verify_password, stored, password)
    if not ok or account is None or banned:
        reason: access.Refusal | access.Failure = access.Failure.WRONG_PASSWORD
        if banned:
            reason = access.Failure.BANNED
        elif decision is not None and decision.refusal is not None and not usable:
            reason = decision.refusal
        access.report(
            Channel.WEB,
            "password",
            account=ik if is_login(ik) else None,
            address=where,
            reason=reason,
        )
        await score_failure(portal, where, account)
        return _login_page(request, FAILED)
    stage = WebStage.ENROL if enrol else WebStage.CODE
    pending = None
    if enrol:
        assert portal.totp_key is not None
        pending = portal.totp_key.encrypt(totp.new_secret().encode()).decode()
    old = await current(request)
    token = await sessions.begin(
        portal.db,
        account.id,
        stage,
        now,
        address=where,
        user_agent=request.headers.get("user-agent", ""),
        replaces=old.session.id if old else None,
        pending_totp=pending,
    )
    response = see_other(STEP_URL[stage])
    set_session_cookie(request, response, token)
    return response


async def _full_login(call: Call, now: datetime, enrolled: list[str] | None = None) -> Response:
    """The second factor passed: a new session (new id, new token) replaces this one."""
    portal, visit, request = call.portal, call.visit, call.request
    token = await sessions.begin(
        portal.db,
        visit.account.id,
        WebStage.FULL,
        now,
        address=address(request),
        user_agent=request.headers.get("user-agent", ""),
        replaces=visit.session.id,
    )
    async with portal.db.session() as session:
        await audit.record(
            session,
            Actor(visit.account.login, address(request)),
            "login",
            at=now,
            target=visit.account.login,
            details={"channel": Channel.WEB.value},
        )
    access.report(
        Channel.WEB, "password+totp", account=visit.account.login, address=address(request)
    )
    if enrolled is None:
        response: Response = see_other("/")
    else:
        found, _ = await sessions.find(portal.db, token, now, portal.settings.web)
        response = render(request, "codes.html", {"codes": enrolled, "first": True}, visit=found)
    set_session_cookie(request, response, token)
    return response


async def _wrong_code(call: Call, template: str, context: dict[str, object]) -> Response:
    portal, visit = call.portal, call.visit
    access.report(
        Channel.WEB,
        "password+totp",
        account=visit.account.login,
        address=address(call.request),
        reason=access.Failure.WRONG_CODE,
    )
    await score_failure(portal, address(call.request), visit.account)
    failures = await sessions.count_failure(portal.db, visit.session.id)
    if failures >= portal.settings.security.max_auth_attempts:
        await sessions.end(portal.db, visit.session.id)
        log.info("web login of %s ended after %d wrong codes", visit.account.login, failures)
        response = _login_page(call.request, FAILED)
        clear_session_cookie(call.request, response)
        return response
    return render(call.request, template, {**context, "message": WRONG_CODE}, visit=visit)


async def code_form(call: Call) -> Response:
    letter = call.visit.account.status is AccountStatus.PENDING
    return render(call.request, "code.html", {"letter": letter}, visit=call.visit)


async def code(call: Call) -> Response:
    """The second factor: a TOTP or recovery code."""
    portal, visit = call.portal, call.visit
    assert call.form is not None
    now = portal.clock.now()
    given = str(call.form.get("code", ""))[:64]
    banned = await _banned(portal, address(call.request), visit.account.login)
    ok = False
    if portal.totp_key is not None and not banned:
        async with portal.db.session() as session:
            ok = await totp.verify(session, visit.account.id, given, portal.totp_key, now)
    letter = visit.account.status is AccountStatus.PENDING
    if ok and letter:
        ok = await registration_pages.activate(
            call, str(call.form.get("aktivierungscode", ""))[:64]
        )
    if not ok:
        return await _wrong_code(call, "code.html", {"letter": letter})
    return await _full_login(call, now)


def qr_data_uri(uri: str) -> str:
    """The otpauth URI as a QR code: an SVG image in a data: URI (CSP allows data: images)."""
    import qrcode
    import qrcode.image.svg

    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=10)
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode("ascii")


def enrolment_context(portal: Portal, ik: str, encrypted: str) -> dict[str, object]:
    assert portal.totp_key is not None
    secret = portal.totp_key.decrypt(encrypted.encode()).decode()
    uri = totp.provisioning_uri(secret, ik, portal.settings.security.totp_issuer)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return {"qr": qr_data_uri(uri), "secret": grouped}


async def enrol_form(call: Call) -> Response:
    visit = call.visit
    if visit.session.pending_totp is None or call.portal.totp_key is None:
        return see_other("/anmelden")
    context = enrolment_context(call.portal, visit.account.login, visit.session.pending_totp)
    return render(
        call.request, "einrichten.html", {**context, "action": "/einrichten"}, visit=visit
    )


async def confirm_enrolment(call: Call, action: str) -> tuple[list[str] | None, Response | None]:
    """Check the first code of a pending secret; on success store it with the account
    (new recovery codes) and return those codes, else the page to answer with."""
    portal, visit = call.portal, call.visit
    assert call.form is not None
    pending = visit.session.pending_totp
    key = portal.totp_key
    if pending is None or key is None:
        return None, see_other("/")
    now = portal.clock.now()
    secret = key.decrypt(pending.encode()).decode()
    given = str(call.form.get("code", ""))[:64]
    if not totp.code_matches(secret, given, now):
        context = {**enrolment_context(portal, visit.account.login, pending), "action": action}
        return None, await _wrong_code(call, "einrichten.html", context)
    async with portal.db.session() as session:
        enrolment = await totp.enable(
            session,
            Actor(visit.account.login, address(call.request)),
            now,
            visit.account.login,
            key,
            portal.settings.security.totp_issuer,
            secret=secret,
        )
        # The confirming code is used up like any other: it cannot log in again.
        await totp.verify(session, visit.account.id, given, key, now)
    await sessions.set_pending_totp(portal.db, visit.session.id, None)
    return enrolment.recovery_codes, None


async def enrol(call: Call) -> Response:
    codes, answer = await confirm_enrolment(call, "/einrichten")
    if codes is None:
        assert answer is not None
        return answer
    if call.visit.account.status is AccountStatus.PENDING:
        return await registration_pages.applied(call, codes)
    return await _full_login(call, call.portal.clock.now(), enrolled=codes)


async def logout(request: Request) -> Response:
    """End this browser's session (any stage)."""
    portal = portal_of(request)
    visit = await current(request)
    try:
        form = await read_form(request)
    except FormTooLarge:
        return too_large(request)
    if visit is not None:
        if not token_ok(visit.session.csrf, form.get(CSRF_FIELD)):
            return forbidden(request)
        await sessions.end(portal.db, visit.session.id)
        async with portal.db.session() as session:
            await audit.record(
                session,
                Actor(visit.account.login, address(request)),
                "logout",
                at=portal.clock.now(),
                target=visit.account.login,
                details={"channel": Channel.WEB.value},
            )
    response = see_other("/anmelden?abgemeldet")
    clear_session_cookie(request, response)
    return response
