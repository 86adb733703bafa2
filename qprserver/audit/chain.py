"""The append-only audit log with keyed hash chains.

Each row stores the hash of the row before it and its own hash over its content,
so an edited, inserted or deleted row breaks the chain and ``verify`` finds it.
With the instance's audit key (``security.audit_key``) the hash is an
HMAC-SHA-256, so whoever can write the database but not read the key cannot
recompute it; rows written before the key existed keep their plain SHA-256 and
verify that way (``audit_seal``: the signed checkpoint says from which row on the
key applies, and where every chain's head was, so removing rows is found too).

Lanes. A chain needs its head read and the new row written by one writer at a
time, until that writer commits: otherwise the row after it could chain on a head
that is later rolled back, or two commits could land in the other order than
their rows chain. With one chain, that one lock (held through the commit's WAL
flush) serialised every transaction with an audit event on every node. So the log
is ``LANES`` chains side by side: an append on PostgreSQL takes the advisory lock
of any free lane (``pg_try_advisory_xact_lock``, starting at a random lane; it
queues only when all are taken) and chains onto that lane's head; each lane is
exactly the single chain of before, with all its properties. ``verify``
(``audit/check.py``) walks all rows once in id order and checks each row against
the one before it in its lane; the signed checkpoint holds every lane's head. A
lane's first row chains on a genesis naming the lane (lane 0, where the rows from
before lanes are, on the old all-zero one), so rows moved between lanes, or a
whole lane relabelled, break too. Within a lane, order is as strict as before;
between lanes, the order of rows is only that of their (hashed) times, as their
transactions ran at once. SQLite has one writer at a time anyway and writes lane
0 only.

Why lanes, and not the other ways to let appends run in parallel: one chain per
writer needs a stable name for every writer (node, worker, CLI, job) and grows
without bound, while a writer's own concurrent sessions still wait for each
other; sealing rows after commit leaves them unprotected until sealed and needs
the sealer to tell a gap of a transaction still running from one rolled back;
group commit cannot join independent transactions, each of which must commit its
event with its own change. A fixed number of lanes needs none of that.

Rows join a chain one way: ``append`` on a connection in a write transaction takes
a lane, reads its head and inserts the chained rows of one or many events.
``record`` and ``record_many`` call it from a session; SQLite's fast path
(``Database.write_now``, used for download receipts) calls it on its own connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from qprserver.db.engine import AUDIT_KEY_INFO
from qprserver.db.models import AuditEvent

GENESIS = "0" * 64
# PostgreSQL advisory locks (CHAIN_LOCK, lane), one per lane, serialise its appends.
CHAIN_LOCK = 7158201
LANES = 16


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


def stored_row_hash(row: AuditEvent, key: bytes | None) -> str:
    """``row_hash`` of a stored row, chained to the ``prev_hash`` it holds."""
    return row_hash(
        row.prev_hash, row.at, row.actor, row.action, row.target, row.source, row.details, key
    )


def _key_of(info: Mapping[str, Any]) -> bytes | None:
    key = info.get(AUDIT_KEY_INFO)
    return key if isinstance(key, bytes) else None


def genesis(lane: int) -> str:
    """The ``prev_hash`` of a lane's first row: all zeros for lane 0 (the one chain
    from before lanes), a hash naming the lane for the others."""
    if lane == 0:
        return GENESIS
    return hashlib.sha256(f"qprserver-audit-lane\0{lane}".encode()).hexdigest()


_HEAD = (
    select(AuditEvent.hash)
    .where(AuditEvent.lane == bindparam("lane"))
    .order_by(AuditEvent.id.desc())
    .limit(1)
)
# The first lane from :first on whose lock is free, taken until the transaction ends
# (one held by this transaction already counts as free: the lock is re-entrant).
_TAKE_LANE = text(
    f"SELECT lane FROM (SELECT (:first + g) % {LANES} AS lane "
    f"FROM generate_series(0, {LANES - 1}) AS g) AS lanes "
    "WHERE pg_try_advisory_xact_lock(:key, lane) LIMIT 1"
)
_WAIT_LANE = text("SELECT pg_advisory_xact_lock(:key, :lane)")
# conn.info key: (the transaction, its lane), so a second append in one transaction
# asks for the same lane first and never waits for another while holding one.
_LANE_OF = "qprserver.audit.lane"
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
    """The newest row of a chain (lane): its id and hash (0 and its genesis when empty)."""

    id: int
    hash: str


def _chained(
    lane: int, prev: str, events: Sequence[Event], key: bytes | None
) -> list[dict[str, Any]]:
    """The rows of events chained onto the row of lane whose hash is prev."""
    rows: list[dict[str, Any]] = []
    for e in events:
        details = json.dumps(dict(e.details or {}), ensure_ascii=False, sort_keys=True)
        digest = row_hash(
            prev, e.at, e.actor.name, e.action, e.target, e.actor.source, details, key
        )
        rows.append(
            {
                "lane": lane,
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


def _take_lane(conn: Connection) -> int:
    """PostgreSQL: take a lane's lock until the transaction ends; its number."""
    transaction = conn.get_transaction()
    held = conn.info.get(_LANE_OF)
    if held is not None and transaction is not None and held[0] is transaction:
        first = int(held[1])
    else:
        first = random.randrange(LANES)  # spread, not secret
    lane = conn.execute(_TAKE_LANE, {"first": first, "key": CHAIN_LOCK}).scalar_one_or_none()
    if lane is None:  # all lanes taken: queue for one
        conn.execute(_WAIT_LANE, {"key": CHAIN_LOCK, "lane": first})
        lane = first
    conn.info[_LANE_OF] = (transaction, lane)
    return int(lane)


def append(conn: Connection, events: Sequence[Event], key: bytes | None) -> Head | None:
    """Append events in order on a connection in the caller's write transaction: the
    one way rows join the chain, whether from a session (``record``, ``record_many``)
    or from SQLite's fast path (``Database.write_now``).

    One lane, one read of its head and one insert, however many events. On
    PostgreSQL the lane's advisory lock (released at commit) keeps the head read here
    the head until then; SQLite writers already hold the database's write lock and
    use lane 0. key: the audit key (HMAC); None writes plain SHA-256 rows. Returns the
    new head when one event was appended (its id names the event, e.g. in mail
    keys); None after a batch or no events, whose ids are not read back.
    """
    if not events:
        return None
    lane = _take_lane(conn) if conn.dialect.name == "postgresql" else 0
    head = conn.execute(_HEAD, {"lane": lane}).scalar_one_or_none() or genesis(lane)
    rows = _chained(lane, head, events, key)
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
    """Append events in order in the caller's transaction: one read of a lane's head
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
