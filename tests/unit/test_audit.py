from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, update

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.engine import Database
from qprserver.db.models import AuditEvent
from qprserver.errors import AuditChainBroken

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
        assert await audit.verify(session) == 3


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
            await audit.verify(session)


async def test_a_deleted_row_breaks_the_chain(db: Database) -> None:
    await _three_events(db)
    async with db.session() as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.id == 2))
    async with db.read_session() as session:
        with pytest.raises(AuditChainBroken, match="event 3: chain broken"):
            await audit.verify(session)


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
        assert await audit.verify(session) == 3 + 250 + 1
        newest = await audit.events(session, limit=251)
    assert newest[0].action == "account.add"
    assert [json.loads(e.details)["n"] for e in reversed(newest[1:])] == list(range(250))


async def test_batches_written_at_once_keep_one_chain(db: Database) -> None:
    async def batch(tag: str) -> None:
        events = [audit.Event(Actor(tag), "download", T0, tag, {"n": i}) for i in range(50)]
        async with db.session() as session:
            await audit.record_many(session, events)

    await asyncio.gather(batch("a"), batch("b"), batch("c"))
    async with db.read_session() as session:
        assert await audit.verify(session) == 150
