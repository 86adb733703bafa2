"""``depositor_usage``, the quota's running total, equals the sum of each depositor's
current documents after uploads, new versions, repeats, concurrent uploads, retention
deletes and direct changes of rows: the triggers on ``documents`` keep it (a
migration that recreated ``documents`` without them fails here and in ``db check``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from alembic import command
from sqlalchemy import func, inspect, select, text

from qprserver.clock import SystemClock
from qprserver.db import migrate, usage
from qprserver.db.engine import Database
from qprserver.db.models import Account, DepositorUsage, Document
from qprserver.exchange import quota, retention
from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes


async def _totals(db: Database) -> tuple[dict[int, int], dict[int, int]]:
    """(running totals, sums of current documents) by depositor, zeros left out."""
    async with db.read_session() as session:
        kept: dict[int, int] = dict(
            (await session.execute(select(DepositorUsage.depositor_id, DepositorUsage.used))).all()
        )
        summed: dict[int, int] = dict(
            (
                await session.execute(
                    select(Document.depositor_id, func.sum(Document.size))
                    .where(Document.current.is_(True))
                    .group_by(Document.depositor_id)
                )
            ).all()
        )
    return {k: int(v) for k, v in kept.items() if v}, {k: int(v) for k, v in summed.items() if v}


async def _agree(db: Database) -> dict[int, int]:
    kept, summed = await _totals(db)
    assert kept == summed
    return kept


async def _used(server: Server) -> int:
    async with server.db.read_session() as session:
        account = (await session.scalars(select(Account).where(Account.login == MD_NW))).one()
        return await quota.used_by_depositor(session, account)


async def test_the_triggers_are_there_after_the_migrations(server: Server) -> None:
    async with server.db.engine.connect() as conn:
        assert await conn.run_sync(usage.missing_triggers) == []
    assert await migrate.check(server.db) == []


async def test_the_total_follows_uploads_versions_repeats_and_retention(server: Server) -> None:
    a, b = f"/outbox/{FACILITY_NW}_pruefbericht_2026.pdf", f"/outbox/{FACILITY_NW}_bericht_b.pdf"
    first, second = pdf_bytes(20_000, seed=b"a1"), pdf_bytes(35_000, seed=b"b1")
    await server.put(MD_NW, a, first)
    await server.put(MD_NW, b, second)
    assert await _used(server) == len(first) + len(second)
    await _agree(server.db)
    newer, direct = pdf_bytes(12_000, seed=b"a2"), pdf_bytes(7_000, seed=b"d")
    await server.put(MD_NW, a, newer)  # a new version replaces the first one's bytes
    await server.put(MD_NW, a, newer)  # the same again: unchanged, no new version
    await server.put(MD_NW, f"/outbox/{LV_NW}/direkt.pdf", direct)
    used = len(newer) + len(second) + len(direct)
    assert await _used(server) == used
    await _agree(server.db)
    # Uploads of one depositor at once: each adds its bytes under the row's lock.
    together = [pdf_bytes(1_000 + i) for i in range(6)]
    await asyncio.gather(
        *(
            server.put(MD_NW, f"/outbox/{FACILITY_NW}_gleichzeitig_{i}.pdf", data)
            for i, data in enumerate(together)
        )
    )
    assert await _used(server) == used + sum(map(len, together))
    await _agree(server.db)
    # Retention removes the deliveries, then the documents no delivery points at.
    later = SystemClock().now() + timedelta(days=10_000)
    ctx = server.listener.ctx
    report = await retention.run_retention(
        server.db, ctx.blobs, server.settings, later, SystemClock(), dry_run=False
    )
    assert report["documents"]
    assert await _agree(server.db) == {}
    assert await _used(server) == 0


async def test_direct_changes_of_documents_keep_the_total(server: Server) -> None:
    sizes = []
    for i, size in enumerate((10_000, 20_000, 30_000)):
        data = pdf_bytes(size, seed=b"%d" % i)
        sizes.append(len(data))
        await server.put(MD_NW, f"/outbox/{FACILITY_NW}_roh_{i}.pdf", data)
    await _agree(server.db)
    async with server.db.engine.begin() as conn:
        await conn.execute(text("UPDATE documents SET size = size + 5 WHERE name LIKE '%roh_0%'"))
        await conn.execute(text("UPDATE documents SET current = false WHERE name LIKE '%roh_1%'"))
    assert await _used(server) == sizes[0] + 5 + sizes[2]
    async with server.db.engine.begin() as conn:
        await conn.execute(text("UPDATE documents SET current = true WHERE name LIKE '%roh_1%'"))
        await conn.execute(text("DELETE FROM deliveries"))
        await conn.execute(text("DELETE FROM upload_protocols"))
        await conn.execute(text("DELETE FROM documents WHERE name LIKE '%roh_2%'"))
    assert await _used(server) == sizes[0] + 5 + sizes[1]
    await _agree(server.db)


async def test_the_migration_counts_the_documents_already_there(server: Server) -> None:
    for i in range(3):
        await server.put(MD_NW, f"/outbox/{FACILITY_NW}_alt_{i}.pdf", pdf_bytes(5_000 * (i + 1)))
    before = await _agree(server.db)
    assert before
    async with server.db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(migrate.alembic_config(c), "0015"))
        assert not await conn.run_sync(lambda c: inspect(c).has_table("depositor_usage"))
    await migrate.upgrade(server.db)
    assert await _agree(server.db) == before
