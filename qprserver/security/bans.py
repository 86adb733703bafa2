"""Brute-force defence: failed logins score per address, guessed secrets per account.

Over ``ban_threshold`` failures within ``ban_window`` seconds the address (or the
account) is banned for ``ban_time`` seconds, doubling with every repeat offence up to
``ban_max_time``. Addresses in the allowlist are never banned. The state lives in the
database, so every process and node sees the same bans.

The two scores mean different things. Every failure scores against its address, and a
banned address is refused altogether. Only wrong passwords and wrong codes score
against the account, and an account ban only stops password and code guesses for it:
an IK is public, so if it refused key logins as well, anyone could lock anyone out.
The caller (``sftp/auth.py``) applies it that way.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from qprserver.accounts.fields import is_login
from qprserver.config import SecuritySettings
from qprserver.db.engine import Database, Reads
from qprserver.db.models import AuthScore
from qprserver.errors import NotFound
from qprserver.observability import events


def address_key(address: str) -> str:
    return f"addr:{address}"


def account_key(login: str) -> str:
    """The score of an account, by its login name (the IK, or ``<IK>-<Standort>``)."""
    return f"account:{login}"


def allowlisted(address: str, settings: SecuritySettings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in settings.allowlist)


async def banned(db: Database, keys: list[str], now: datetime) -> bool:
    """True when any of the keys is banned at ``now``."""
    return bool(await banned_keys(db, keys, now))


async def banned_keys(db: Database, keys: list[str], now: datetime) -> set[str]:
    """The keys among ``keys`` that are banned at ``now`` (one read)."""
    params = {"keys": keys, "now": now}

    async def work(reads: Reads) -> set[str]:
        return set((await reads.scalars(_BANNED, params)).all())

    return await db.quick_read(work)


# Built once: every connection runs it.
_BANNED = select(AuthScore.key).where(
    AuthScore.key.in_(bindparam("keys", expanding=True)),
    AuthScore.banned_until > bindparam("now"),
)
_BANNED_ADDRESSES = select(AuthScore.key).where(
    AuthScore.key.like("addr:%"), AuthScore.banned_until > bindparam("now")
)


async def banned_addresses(reads: Reads, now: datetime) -> set[str]:
    """Every address banned at ``now`` (servers re-read it every few seconds)."""
    keys = (await reads.execute(_BANNED_ADDRESSES, {"now": now})).scalars()
    return {key.removeprefix("addr:") for key in keys}


async def record_failure(
    db: Database, keys: list[str], now: datetime, settings: SecuritySettings
) -> list[str]:
    """Count one failed login against each key; return the keys banned by it."""
    newly: list[tuple[str, datetime, int]] = []
    for key in keys:
        for _attempt in range(3):
            try:
                async with db.session() as session:
                    # Locked: failures scored at once by other connections or nodes
                    # (PostgreSQL) would otherwise overwrite each other's count.
                    row = await session.scalar(
                        select(AuthScore).where(AuthScore.key == key).with_for_update()
                    )
                    if row is None:
                        row = AuthScore(
                            key=key, failures=0, window_start=now, offences=0, updated_at=now
                        )
                        session.add(row)
                    if now - row.window_start > timedelta(seconds=settings.ban_window):
                        row.window_start = now
                        row.failures = 0
                    row.failures += 1
                    row.updated_at = now
                    if row.failures >= settings.ban_threshold:
                        seconds = min(settings.ban_time * 2**row.offences, settings.ban_max_time)
                        row.banned_until = now + timedelta(seconds=seconds)
                        row.offences += 1
                        row.failures = 0
                        row.window_start = now
                        newly.append((key, row.banned_until, seconds))
                break
            except IntegrityError:
                continue  # another node created the row first; count on top of it
    for key, until, seconds in newly:
        events.ban_set(key, until, seconds)
    return [key for key, _, _ in newly]


async def list_bans(db: Database, now: datetime) -> list[AuthScore]:
    async with db.read_session() as session:
        rows = await session.scalars(
            select(AuthScore).where(AuthScore.banned_until > now).order_by(AuthScore.key)
        )
        return list(rows.all())


async def remove_ban(db: Database, key: str) -> None:
    """Lift a ban (``addr:<ip>`` or ``account:<login>``; a bare address, IK or login name
    works too)."""
    if ":" not in key or not key.startswith(("addr:", "account:")):
        key = account_key(key) if is_login(key) else address_key(key)
    async with db.session() as session:
        row = await session.scalar(select(AuthScore).where(AuthScore.key == key))
        if row is None or row.banned_until is None:
            raise NotFound(f"keine Sperre für {key}")
        row.banned_until = None
        row.failures = 0
    events.ban_lifted(key)
