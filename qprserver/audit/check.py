"""Checking the audit log's chains: every lane walked once in id order.

Each row must chain on the row before it in its lane (the lane's genesis for its
first row) and carry the hash of its content: keyed (HMAC) from ``keyed_from`` on,
plain SHA-256 before. How the lanes come about: ``audit/chain.py``; how their heads
are kept outside the database: ``audit/seal.py``.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Mapping

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit.chain import LANES, Head, genesis, stored_row_hash
from qprserver.db.models import AuditEvent
from qprserver.errors import AuditChainBroken


async def one_snapshot(session: AsyncSession) -> None:
    """Make the rest of the session's transaction read one snapshot; call it first.

    On PostgreSQL each statement otherwise sees the newest commits: a row of a
    transaction still open when the walk passed its id, committed before the walk
    reaches the next row of its lane, would look removed. (SQLite's read transaction
    is one snapshot already.)
    """
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


async def _iter_rows(
    session: AsyncSession, *where: ColumnElement[bool], after: int = 0, page: int = 1000
) -> AsyncIterator[AuditEvent]:
    last_id = after
    while True:
        rows = (
            await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > last_id, *where)
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
    """Check every lane of the chain; return the number of rows or raise AuditChainBroken."""
    count, _heads = await check_chain(session, key, keyed_from=keyed_from)
    return count


async def lane_heads(session: AsyncSession) -> dict[int, Head]:
    """The newest row of every lane that has rows."""
    heads: dict[int, Head] = {}
    for lane in range(LANES):
        row = (
            await session.execute(
                select(AuditEvent.id, AuditEvent.hash)
                .where(AuditEvent.lane == lane)
                .order_by(AuditEvent.id.desc())
                .limit(1)
            )
        ).first()
        if row is not None:
            heads[lane] = Head(row[0], row[1])
    return heads


class _Walk:
    """The state of one check: each lane's last row, and how many rows were checked."""

    def __init__(self, key: bytes | None, keyed_from: int, heads: Mapping[int, Head]) -> None:
        self.key = key
        self.keyed_from = keyed_from
        self.heads = dict(heads)
        self.count = 0

    def check(self, row: AuditEvent) -> None:
        last = self.heads.get(row.lane)
        if row.prev_hash != (last.hash if last is not None else genesis(row.lane)):
            raise AuditChainBroken(
                f"audit event {row.id}: chain broken before it (a row was removed or inserted)"
            )
        expected = stored_row_hash(row, self.key if row.id >= self.keyed_from else None)
        if not hmac.compare_digest(expected, row.hash):
            raise AuditChainBroken(f"audit event {row.id}: content does not match its hash")
        self.heads[row.lane] = Head(row.id, row.hash)
        self.count += 1


async def check_chain(
    session: AsyncSession,
    key: bytes | None = None,
    *,
    keyed_from: int = 1,
    start: Mapping[int, Head] | None = None,
) -> tuple[int, dict[int, Head]]:
    """Check every lane; return the rows checked and each lane's head, or raise
    AuditChainBroken.

    Rows with an id from ``keyed_from`` on must carry the keyed hash (with ``key``);
    earlier ones the plain one. ``start``: per lane, check only the rows after this
    one, which must be there with this hash (from a checkpoint already verified).
    """
    checked: dict[int, Head] = {}
    for lane, head in (start or {}).items():
        if head.id <= 0:
            continue
        found = await session.scalar(
            select(AuditEvent.hash).where(AuditEvent.id == head.id, AuditEvent.lane == lane)
        )
        if found != head.hash:
            raise AuditChainBroken(f"audit event {head.id} missing or changed since checked")
        checked[lane] = head
    walk = _Walk(key, keyed_from, checked)
    after = min((head.id for head in checked.values()), default=0)
    if after > 0:
        # A lane without rows at the checkpoint may have rows with lower ids than
        # the others' heads (a transaction that took its id before and committed after).
        for lane in range(LANES):
            if lane not in checked:
                async for row in _iter_rows(
                    session, AuditEvent.lane == lane, AuditEvent.id <= after
                ):
                    walk.check(row)
    async for row in _iter_rows(session, after=after):
        known = checked.get(row.lane)
        if known is None or row.id > known.id:
            walk.check(row)
    return walk.count, walk.heads
