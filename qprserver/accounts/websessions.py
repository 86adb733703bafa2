"""The web portal's login sessions, kept in the database (``web_sessions``).

The portal (``web/``) makes and checks them; the sweep job removes those past their
time (``expire``); nothing here knows HTTP.

The browser holds a random id (32 bytes, URL-safe) in a cookie; the row holds only
its SHA-256, so a copy of the database opens no session. Each step of a login (the
password, the second factor) ends the row it came with and makes a new one with a
new id and a new CSRF token, so an id planted or seen before a step is worthless
after it.

A session is checked on every request, against the account as it is now: it ends
when the account is disabled, removed or expired, when its password was set after
the session began (on the CLI or another browser), after ``web.session_idle``
seconds without a request and ``web.session_max`` seconds after the login. The
check reads; the last-seen time is written at most every ``TOUCH_SECONDS``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import selectinload

from qprserver.accounts.access import Refusal, standing
from qprserver.config import WebSettings
from qprserver.db.engine import Database
from qprserver.db.models import Account, WebSession, WebStage

TOUCH_SECONDS = 30.0

_BY_TOKEN = (
    select(WebSession, Account)
    .join(Account, WebSession.account_id == Account.id)
    .where(WebSession.token_hash == bindparam("token_hash"))
    .options(selectinload(Account.password), selectinload(Account.keys))
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Visit:
    """A request's valid session and its account."""

    session: WebSession
    account: Account
    token: str


def problem(row: WebSession, account: Account, now: datetime, web: WebSettings) -> str | None:
    """Why a session is over at ``now`` (for the log), or None while it is valid."""
    refusal = standing(account.status, account.expires_at, now)
    # A pending registrant's session only ever finishes its registration (second
    # factor, the letter's code); it never reaches a full login while pending.
    if refusal is not None and not (refusal is Refusal.PENDING and row.stage is not WebStage.FULL):
        return str(refusal)
    if now - row.last_seen_at > timedelta(seconds=web.session_idle):
        return "idle"
    if now - row.created_at > timedelta(seconds=web.session_max):
        return "max-age"
    password = account.password
    if password is not None and password.updated_at > row.created_at:
        return "password-changed"
    return None


async def find(
    db: Database, token: str | None, now: datetime, web: WebSettings
) -> tuple[Visit | None, str | None]:
    """The valid session of a cookie; else None and why (a dead row is removed)."""
    if not token or len(token) > 100:
        return None, None
    async with db.read_session() as session:
        found = (await session.execute(_BY_TOKEN, {"token_hash": token_hash(token)})).first()
    if found is None:
        return None, "unknown"
    row, account = found
    why = problem(row, account, now, web)
    if why is not None:
        await end(db, row.id)
        return None, why
    if now - row.last_seen_at > timedelta(seconds=TOUCH_SECONDS):
        async with db.session() as session:
            await session.execute(
                update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now)
            )
    return Visit(row, account, token), None


async def begin(
    db: Database,
    account_id: int,
    stage: WebStage,
    now: datetime,
    *,
    address: str,
    user_agent: str,
    replaces: int | None = None,
    pending_totp: str | None = None,
) -> str:
    """A new session (a new id and CSRF token); ``replaces`` ends the one it follows."""
    token = new_token()
    async with db.session() as session:
        if replaces is not None:
            await session.execute(delete(WebSession).where(WebSession.id == replaces))
        session.add(
            WebSession(
                token_hash=token_hash(token),
                account_id=account_id,
                stage=stage,
                csrf=secrets.token_urlsafe(32),
                pending_totp=pending_totp,
                failures=0,
                address=address[:64],
                user_agent=user_agent[:200],
                created_at=now,
                last_seen_at=now,
            )
        )
    return token


async def end(db: Database, session_id: int) -> None:
    async with db.session() as session:
        await session.execute(delete(WebSession).where(WebSession.id == session_id))


async def end_all(db: Database, account_id: int, *, keep: int | None = None) -> int:
    """End every web session of an account (but ``keep``); how many ended."""
    stmt = delete(WebSession).where(WebSession.account_id == account_id)
    if keep is not None:
        stmt = stmt.where(WebSession.id != keep)
    async with db.session() as session:
        result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


async def count_failure(db: Database, session_id: int) -> int:
    """One more wrong code in this session; the count so far."""
    async with db.session() as session:
        row = await session.get(WebSession, session_id, with_for_update=True)
        if row is None:
            return 1_000_000
        row.failures += 1
        return row.failures


async def set_pending_totp(db: Database, session_id: int, encrypted: str | None) -> None:
    async with db.session() as session:
        await session.execute(
            update(WebSession).where(WebSession.id == session_id).values(pending_totp=encrypted)
        )


async def expire(db: Database, now: datetime, web: WebSettings) -> int:
    """Remove sessions past ``web.session_max`` or idle past ``web.session_idle`` (the
    sweep job; a request meeting one removes it too); how many went."""
    oldest = now - timedelta(seconds=web.session_max)
    idle = now - timedelta(seconds=web.session_idle)
    async with db.session() as session:
        result = await session.execute(
            delete(WebSession).where(
                (WebSession.created_at <= oldest) | (WebSession.last_seen_at <= idle)
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)


async def list_for(
    db: Database, account_id: int, now: datetime, web: WebSettings
) -> list[WebSession]:
    """The account's sessions still valid by time, newest first."""
    oldest = now - timedelta(seconds=web.session_max)
    idle = now - timedelta(seconds=web.session_idle)
    async with db.read_session() as session:
        rows = await session.scalars(
            select(WebSession)
            .where(
                WebSession.account_id == account_id,
                WebSession.stage == WebStage.FULL,
                WebSession.created_at > oldest,
                WebSession.last_seen_at > idle,
            )
            .order_by(WebSession.created_at.desc())
        )
        return list(rows.all())
