from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from qprserver.audit import chain as audit
from qprserver.audit import check as audit_check
from qprserver.audit.chain import Actor
from qprserver.db.engine import Database
from qprserver.db.models import AuditEvent
from qprserver.errors import AuditChainBroken
from tests.conftest import BACKEND

POSTGRESQL_ONLY = pytest.mark.skipif(
    BACKEND != "postgresql", reason="SQLite has one writer at a time: every row is in lane 0"
)

T0 = datetime(2026, 11, 2, 9, 30, 15, 123456, tzinfo=UTC)


async def _three_events(db: Database) -> None:
    async with db.session() as session:
        for i in range(3):
            await audit.record(
                session,
                Actor("105830016", "192.0.2.7:5555"),
                "login",
                at=T0 + timedelta(seconds=i),
                target="105830016",
                details={"n": i, "name": "Pflegeheim Sonnenschein"},
            )


async def test_a_fresh_chain_verifies(db: Database) -> None:
    await _three_events(db)
    async with db.read_session() as session:
        assert await audit_check.verify(session) == 3


async def test_timestamps_come_back_in_utc_with_microseconds(db: Database) -> None:
    await _three_events(db)
    async with db.read_session() as session:
        first = (await audit.events(session, limit=3))[-1]
    assert first.at == T0


async def test_an_edited_row_breaks_the_chain(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(action="logout"))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 2: content does not match"):
            await audit_check.verify(session)


async def test_a_deleted_row_breaks_the_chain(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.id == 2))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 3: chain broken"):
            await audit_check.verify(session)


async def test_events_filter_by_account(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        await audit.record(session, Actor("cli"), "account.add", at=T0, target="260100023")
    async with db.read_session() as session:
        assert [e.target for e in await audit.events(session, account="260100023")] == ["260100023"]
        assert len(await audit.events(session, account="105830016")) == 3


async def test_a_batch_chains_in_order_between_single_events(db: Database) -> None:
    await _three_events(db)
    batch = [
        audit.Event(Actor("180500016", "192.0.2.9:2222"), "download", T0, "180500016", {"n": i})
        for i in range(250)
    ]
    async with db.session() as session:
        await audit.record_many(session, batch)
        await audit.record_many(session, [])
        await audit.record(session, Actor("cli"), "account.add", at=T0, target="260100023")
    async with db.read_session() as session:
        assert await audit_check.verify(session) == 3 + 250 + 1
        newest = await audit.events(session, limit=251)
    assert newest[0].action == "account.add"
    assert [json.loads(e.details)["n"] for e in reversed(newest[1:])] == list(range(250))


async def test_batches_written_at_once_keep_the_chain_verifiable(db: Database) -> None:
    async def batch(tag: str) -> None:
        events = [audit.Event(Actor(tag), "download", T0, tag, {"n": i}) for i in range(50)]
        async with db.session() as session:
            await audit.record_many(session, events)

    await asyncio.gather(batch("a"), batch("b"), batch("c"))
    async with db.read_session() as session:
        assert await audit_check.verify(session) == 150


async def test_rows_swapped_in_order_break_the_chain(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(id=-2))
        await session.execute(update(AuditEvent).where(AuditEvent.id == 3).values(id=2))
        await session.execute(update(AuditEvent).where(AuditEvent.id == -2).values(id=3))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 2: chain broken"):
            await audit_check.verify(session)


async def test_a_row_moved_to_another_lane_breaks_the_chain(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        lane = await session.scalar(select(AuditEvent.lane).where(AuditEvent.id == 2))
        assert lane is not None
        moved = (lane + 1) % audit.LANES
        await session.execute(update(AuditEvent).where(AuditEvent.id == 2).values(lane=moved))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="chain broken"):
            await audit_check.verify(session)


async def test_a_lane_relabelled_as_a_lane_of_its_own_breaks_the_chain(db: Database) -> None:
    async with db.session() as session:
        await audit.record(session, Actor("cli"), "account.add", at=T0, target="260100023")
        await audit.record(session, Actor("cli"), "account.disable", at=T0, target="260100023")
    async with db.session() as session:  # one transaction: one lane
        lane = await session.scalar(select(AuditEvent.lane).where(AuditEvent.id == 1))
        assert lane is not None
        moved = (lane + 1) % audit.LANES
        await session.execute(update(AuditEvent).values(lane=moved))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 1: chain broken"):
            await audit_check.verify(session)


async def test_a_check_from_known_heads_checks_the_rows_after_them(db: Database) -> None:
    await _three_events(db)
    async with db.read_session() as session:
        heads = await audit_check.lane_heads(session)
    await _three_events(db)
    async with db.read_session() as session:
        count, after = await audit_check.check_chain(session, start=heads)
        assert count == 3
        assert after == await audit_check.lane_heads(session)
    async with db.session() as session:
        await session.execute(update(AuditEvent).where(AuditEvent.id == 5).values(actor="x"))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 5: content does not match"):
            await audit_check.check_chain(session, start=heads)


@POSTGRESQL_ONLY
async def test_two_open_transactions_append_side_by_side_in_two_lanes(db: Database) -> None:
    async with db.session() as first:
        await audit.record(first, Actor("a"), "login", at=T0, target="a")
        await audit.record(first, Actor("a"), "logout", at=T0, target="a")
        # With one chain lock this would wait for ``first`` to commit, which waits for it.
        async with asyncio.timeout(10), db.session() as second:
            await audit.record(second, Actor("b"), "login", at=T0, target="b")
    async with db.read_session() as session:
        assert await audit_check.verify(session) == 3
        rows = (
            await session.execute(select(AuditEvent.actor, AuditEvent.lane).order_by(AuditEvent.id))
        ).all()
    assert [actor for actor, _lane in rows] == ["a", "a", "b"]
    assert rows[0].lane == rows[1].lane != rows[2].lane  # one transaction keeps its lane
