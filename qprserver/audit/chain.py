"""The append-only audit log with a keyed hash chain.

Each row stores the hash of the row before it and its own hash over its content,
so an edited, inserted or deleted row breaks the chain and ``verify`` finds it.
With the instance's audit key (``security.audit_key``) the hash is an
HMAC-SHA-256, so whoever can write the database but not read the key cannot
recompute it; rows written before the key existed keep their plain SHA-256 and
verify that way (``audit_seal``: the signed checkpoint says from which row on the
key applies, and where the chain's head was, so removing rows is found too).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.db.engine import AUDIT_KEY_INFO
from qprserver.db.models import AuditEvent
from qprserver.errors import AuditChainBroken

GENESIS = "0" * 64
# PostgreSQL advisory lock that serialises appends to the chain.
CHAIN_LOCK = 7158201


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an account's IK, an operator at the CLI, or the system itself."""

    name: str
    source: str = ""

    @classmethod
    def system(cls) -> Actor:
        return cls("system", "local")


def row_hash(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    source: str,
    details: str,
    key: bytes | None = None,
) -> str:
    """The hash of one audit row's content chained to the previous row: HMAC-SHA-256
    with the audit key, plain SHA-256 without one (rows from before the key)."""
    canonical = json.dumps(
        [prev_hash, at.isoformat(timespec="microseconds"), actor, action, target, source, details],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    if key is None:
        return hashlib.sha256(canonical).hexdigest()
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def _key_of(info: Mapping[str, Any]) -> bytes | None:
    key = info.get(AUDIT_KEY_INFO)
    return key if isinstance(key, bytes) else None


_HEAD = select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
# Core, not the ORM's bulk insert: no per-row ORM work. Given a list of rows it runs as
# executemany without RETURNING, row by row, so ids follow the chain order.
_APPEND = insert(cast(Table, AuditEvent.__table__))


async def _last_hash(session: AsyncSession) -> str:
    result = await session.execute(_HEAD)
    return result.scalar_one_or_none() or GENESIS


@dataclass(frozen=True, slots=True)
class Event:
    """One event to append with ``record_many``."""

    actor: Actor
    action: str
    at: datetime
    target: str = ""
    details: Mapping[str, Any] | None = None


def _chained(prev: str, events: Sequence[Event], key: bytes | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for e in events:
        details = json.dumps(dict(e.details or {}), ensure_ascii=False, sort_keys=True)
        digest = row_hash(
            prev, e.at, e.actor.name, e.action, e.target, e.actor.source, details, key
        )
        rows.append(
            {
                "at": e.at,
                "actor": e.actor.name,
                "action": e.action,
                "target": e.target,
                "source": e.actor.source,
                "details": details,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    return rows


async def _lock_chain(session: AsyncSession) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Serialise writers on the chain head; released at commit.
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    # The caller's pending changes first, so the savepoint below holds only the events.
    await session.flush()


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    at: datetime,
    target: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event in the caller's transaction."""
    await _lock_chain(session)
    key = _key_of(session.info)
    one = [Event(actor, action, at, target, details)]
    event = AuditEvent(**_chained(await _last_hash(session), one, key)[0])
    session.add(event)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Another writer appended first (SQLite without the advisory lock): chain on it.
        session.expunge(event)
        event = AuditEvent(**_chained(await _last_hash(session), one, key)[0])
        session.add(event)
        await session.flush()
    return event


async def record_many(session: AsyncSession, events: Sequence[Event]) -> None:
    """Append events in order in the caller's transaction: one read of the chain head
    and one multi-row insert, however many events (download receipts come in batches).
    """
    if not events:
        return
    await _lock_chain(session)
    key = _key_of(session.info)
    try:
        async with session.begin_nested():
            await session.execute(_APPEND, _chained(await _last_hash(session), events, key))
    except IntegrityError:
        await session.execute(_APPEND, _chained(await _last_hash(session), events, key))


def append_now(conn: Connection, events: Sequence[Event]) -> None:
    """``record_many`` on a synchronous connection already in a write transaction
    that holds the database's write lock (SQLite ``BEGIN IMMEDIATE``): the head read
    here stays the head until commit.
    """
    if events:
        head = conn.execute(_HEAD).scalar_one_or_none() or GENESIS
        conn.execute(_APPEND, _chained(head, events, _key_of(conn.info)))


async def events(
    session: AsyncSession, *, account: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    """The newest events first, optionally only those by or about one account."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if account is not None:
        query = query.where(or_(AuditEvent.actor == account, AuditEvent.target == account))
    return list((await session.scalars(query)).all())


async def _iter_all(
    session: AsyncSession, after: int = 0, page: int = 1000
) -> AsyncIterator[AuditEvent]:
    last_id = after
    while True:
        rows = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > last_id)
                .order_by(AuditEvent.id)
                .limit(page)
            )
        ).all()
        if not rows:
            return
        for row in rows:
            yield row
        last_id = rows[-1].id
        session.expunge_all()


@dataclass(frozen=True, slots=True)
class Head:
    """The newest row of the chain: its id and hash (0 and GENESIS when empty)."""

    id: int
    hash: str


async def verify(session: AsyncSession, key: bytes | None = None, *, keyed_from: int = 1) -> int:
    """Check the whole chain; return the number of rows or raise AuditChainBroken."""
    count, _head = await check_chain(session, key, keyed_from=keyed_from)
    return count


async def check_chain(
    session: AsyncSession,
    key: bytes | None = None,
    *,
    keyed_from: int = 1,
    start: Head | None = None,
) -> tuple[int, Head]:
    """Check the chain; return the rows checked and the head, or raise AuditChainBroken.

    Rows with an id from ``keyed_from`` on must carry the keyed hash (with ``key``);
    earlier ones the plain one. ``start``: check only the rows after this one, which
    must be there with this hash (from a checkpoint already verified).
    """
    prev = GENESIS
    after = 0
    if start is not None and start.id > 0:
        found = await session.scalar(select(AuditEvent.hash).where(AuditEvent.id == start.id))
        if found != start.hash:
            raise AuditChainBroken(f"audit event {start.id} missing or changed since checked")
        prev, after = start.hash, start.id
    head = start or Head(0, GENESIS)
    count = 0
    async for row in _iter_all(session, after):
        if row.prev_hash != prev:
            raise AuditChainBroken(
                f"audit event {row.id}: chain broken before it (a row was removed or inserted)"
            )
        expected = row_hash(
            row.prev_hash,
            row.at,
            row.actor,
            row.action,
            row.target,
            row.source,
            row.details,
            key if row.id >= keyed_from else None,
        )
        if not hmac.compare_digest(expected, row.hash):
            raise AuditChainBroken(f"audit event {row.id}: content does not match its hash")
        prev = row.hash
        head = Head(row.id, row.hash)
        count += 1
    return count, head
