"""One-time secrets sent by mail or by letter: only their SHA-256 is stored.

A token is issued for one purpose and one registration or account, holds until its
expiry, and is used up by the first ``consume``; issuing a new one for the same purpose
and owner voids the earlier ones, so only the latest link or letter works. ``consume``
gives the same error for an unknown, expired or used token: the message says what to
do, not which of the three it was.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import TokenPurpose
from qprserver.db.models import OneTimeToken
from qprserver.errors import InvalidInput

# Letter codes are typed by hand: no 0/O, 1/I/L, in groups of four.
_LETTER_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_LETTER_GROUPS = 4

INVALID = {
    TokenPurpose.CONFIRM: "Der Bestätigungslink ist ungültig, abgelaufen oder wurde schon "
    "benutzt. Fordern Sie im Registrierungsformular einen neuen an.",
    TokenPurpose.PASSWORD: "Der Link zum Festlegen des Passworts ist ungültig, abgelaufen oder "
    "wurde schon benutzt.",
    TokenPurpose.RESET: "Der Link zum Zurücksetzen des Passworts ist ungültig, abgelaufen oder "
    "wurde schon benutzt. Fordern Sie einen neuen an.",
    TokenPurpose.LETTER: "Der Aktivierungscode ist falsch, abgelaufen oder wurde schon benutzt.",
    TokenPurpose.QB_CONFIRM: "Der Bestätigungslink der Berichtsregistrierung ist ungültig, "
    "abgelaufen oder wurde schon benutzt.",
    TokenPurpose.QB_CORRECT: "Der Korrekturlink der Berichtsregistrierung ist ungültig, "
    "abgelaufen oder wurde schon benutzt. Die Korrekturphase endet mit ihrem letzten Tag.",
}


def digest(token: str) -> str:
    """The stored form of a token (letter codes ignore case, blanks and dashes)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_letter_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def new_letter_code() -> str:
    """A code for a letter: 16 characters of 31 (about 79 bits), grouped by four."""
    raw = "".join(secrets.choice(_LETTER_ALPHABET) for _ in range(4 * _LETTER_GROUPS))
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


async def issue(
    session: AsyncSession,
    purpose: TokenPurpose,
    now: datetime,
    lifetime: timedelta,
    *,
    registration_id: int | None = None,
    account_id: int | None = None,
    qb_registration_id: int | None = None,
) -> str:
    """A new token in clear (for the mail or letter); earlier unused ones of the same
    purpose and owner stop working."""
    if registration_id is not None:
        owner = OneTimeToken.registration_id == registration_id
    elif account_id is not None:
        owner = OneTimeToken.account_id == account_id
    elif qb_registration_id is not None:
        owner = OneTimeToken.qb_registration_id == qb_registration_id
    else:
        raise ValueError("a token needs an owner")
    await session.execute(
        update(OneTimeToken)
        .where(OneTimeToken.purpose == purpose, owner, OneTimeToken.used_at.is_(None))
        .values(used_at=now)
    )
    if purpose is TokenPurpose.LETTER:
        token = new_letter_code()
        stored = digest(normalise_letter_code(token))
    else:
        token = secrets.token_urlsafe(32)
        stored = digest(token)
    session.add(
        OneTimeToken(
            purpose=purpose,
            token_hash=stored,
            registration_id=registration_id,
            account_id=account_id,
            qb_registration_id=qb_registration_id,
            expires_at=now + lifetime,
            created_at=now,
        )
    )
    await session.flush()
    return token


async def consume(
    session: AsyncSession,
    purpose: TokenPurpose,
    token: str,
    now: datetime,
    *,
    account_id: int | None = None,
) -> OneTimeToken:
    """Use a token up; InvalidInput when it is unknown, expired, used or of another
    purpose (or, with ``account_id``, another account's). The row is locked, so of two
    concurrent uses one wins."""
    query = _usable(purpose, token, now)
    if query is None:
        raise InvalidInput(INVALID[purpose])
    if account_id is not None:
        query = query.where(OneTimeToken.account_id == account_id)
    row = await session.scalar(query.with_for_update())
    if row is None:
        raise InvalidInput(INVALID[purpose])
    row.used_at = now
    await session.flush()
    return row


async def find(
    session: AsyncSession, purpose: TokenPurpose, token: str, now: datetime
) -> OneTimeToken | None:
    """The token's row while it can still be used, without using it up (a page that
    shows what its form will change); None when it is unknown, expired or used."""
    query = _usable(purpose, token, now)
    return None if query is None else await session.scalar(query)


def _usable(purpose: TokenPurpose, token: str, now: datetime) -> Select[OneTimeToken] | None:
    clean = normalise_letter_code(token) if purpose is TokenPurpose.LETTER else token.strip()
    if not clean or len(clean) > 100:
        return None
    return select(OneTimeToken).where(
        OneTimeToken.token_hash == digest(clean),
        OneTimeToken.purpose == purpose,
        OneTimeToken.used_at.is_(None),
        OneTimeToken.expires_at > now,
    )


async def purge(session: AsyncSession, now: datetime) -> int:
    """Remove tokens that can no longer be used; returns how many."""
    rows = (
        await session.scalars(
            select(OneTimeToken.id).where(
                or_(OneTimeToken.used_at.is_not(None), OneTimeToken.expires_at <= now)
            )
        )
    ).all()
    for token_id in rows:
        await session.delete(await session.get_one(OneTimeToken, token_id))
    return len(rows)
