"""The append-only audit log with a keyed hash chain.

Each row stores the hash of the row before it and its own hash over its content,
so an edited, inserted or deleted row breaks the chain and ``verify`` finds it.
With the instance's audit key (``security.audit_key``) the hash is an
HMAC-SHA-256, so whoever can write the database but not read the key cannot
recompute it; rows written before the key existed keep their plain SHA-256 and
verify that way (``audit_seal``: the signed checkpoint says from which row on the
key applies, and where the chain's head was, so removing rows is found too).

Rows join the chain one way: ``append`` on a connection in a write transaction reads
the head and inserts the chained rows of one or many events. ``record`` and
``record_many`` call it from a session; SQLite's fast path (``Database.write_now``,
used for download receipts) calls it on its own connection.
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
from sqlalchemy.orm import Session

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


@dataclass(frozen=True, slots=True)
class Event:
    """One event to append to the chain."""

    actor: Actor
    action: str
    at: datetime
    target: str = ""
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """The newest row of the chain: its id and hash (0 and GENESIS when empty)."""

    id: int
    hash: str


def _chained(prev: str, events: Sequence[Event], key: bytes | None) -> list[dict[str, Any]]:
    """The rows of events chained onto the row whose hash is prev."""
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


def append(conn: Connection, events: Sequence[Event], key: bytes | None) -> Head | None:
    """Append events in order on a connection in the caller's write transaction: the
    one way rows join the chain, whether from a session (``record``, ``record_many``)
    or from SQLite's fast path (``Database.write_now``).

    One read of the chain head and one insert, however many events. On PostgreSQL an
    advisory lock (released at commit) keeps the head read here the head until then;
    SQLite writers already hold the database's write lock. key: the audit key (HMAC);
    None writes plain SHA-256 rows. Returns the new head when one event was appended
    (its id names the event, e.g. in mail keys); None after a batch or no events,
    whose ids are not read back.
    """
    if not events:
        return None
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHAIN_LOCK})
    head = conn.execute(_HEAD).scalar_one_or_none() or GENESIS
    rows = _chained(head, events, key)
    if len(rows) > 1:
        conn.execute(_APPEND, rows)
        return None
    inserted = conn.execute(_APPEND, rows[0]).inserted_primary_key
    assert inserted is not None  # a single-row insert always reports its key
    return Head(int(inserted[0]), rows[0]["hash"])


def _append_in(sync_session: Session, events: Sequence[Event], key: bytes | None) -> Head | None:
    return append(sync_session.connection(), events, key)


async def _append_in_session(session: AsyncSession, events: Sequence[Event]) -> Head | None:
    # The caller's pending changes first, so the savepoint below holds only the events.
    await session.flush()
    key = _key_of(session.info)
    try:
        async with session.begin_nested():
            return await session.run_sync(_append_in, events, key)
    except IntegrityError:
        # Another writer appended first (a transaction that does not hold the write
        # lock or the advisory lock): ``prev_hash`` is unique, so chain on its row.
        return await session.run_sync(_append_in, events, key)


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    *,
    at: datetime,
    target: str = "",
    details: Mapping[str, Any] | None = None,
) -> Head:
    """Append one audit event in the caller's transaction; the chain's new head."""
    head = await _append_in_session(session, [Event(actor, action, at, target, details)])
    assert head is not None  # one event appended
    return head


async def record_many(session: AsyncSession, events: Sequence[Event]) -> None:
    """Append events in order in the caller's transaction: one read of the chain head
    and one multi-row insert, however many events (download receipts come in batches).
    """
    if events:
        await _append_in_session(session, events)


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
