"""``Database.write``: a synchronous function on a connection in one write transaction,
committed when it returns, rolled back when it raises; on SQLite in one trip to a worker thread that
takes its turn with the process's write sessions and waits out another process's
write lock."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.engine import make_url

from qprserver.db.engine import Database
from qprserver.db.models import Account
from tests.conftest import BACKEND

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
sqlite_only = pytest.mark.skipif(
    BACKEND != "sqlite", reason="SQLite's write lock and turns; PostgreSQL locks rows"
)


def _add(conn: Connection, ik: str) -> int:
    inserted = conn.execute(
        insert(Account),
        {"ik": ik, "name": f"Konto {ik}", "roles": "recipient", "created_at": T0, "updated_at": T0},
    ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


async def _iks(db: Database) -> list[str]:
    async with db.read_session() as session:
        return list((await session.scalars(select(Account.ik).order_by(Account.ik))).all())


async def test_a_write_commits_what_its_work_wrote_and_returns_its_result(db: Database) -> None:
    account_id = await db.write(lambda conn: _add(conn, "105830016"))
    assert account_id > 0
    assert await _iks(db) == ["105830016"]


async def test_a_write_whose_work_raises_leaves_nothing(db: Database) -> None:
    def work(conn: Connection) -> None:
        _add(conn, "105830016")
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await db.write(work)
    assert await _iks(db) == []


@sqlite_only
async def test_writes_and_sessions_of_one_process_take_turns(db: Database) -> None:
    """Each write reads the count and adds one: none may see another's half."""

    def next_one(conn: Connection) -> None:
        count = conn.execute(select(func.count()).select_from(Account)).scalar() or 0
        _add(conn, f"{100000000 + count:09d}")

    async def by_session() -> None:
        async with db.session() as session:
            count = await session.scalar(select(func.count()).select_from(Account)) or 0
            await asyncio.sleep(0)  # let the others queue up meanwhile
            await session.run_sync(lambda s: _add(s.connection(), f"{100000000 + count:09d}"))

    await asyncio.gather(
        *(db.write(next_one) for _ in range(10)), *(by_session() for _ in range(5))
    )
    assert len(set(await _iks(db))) == 15


@sqlite_only
async def test_a_write_inside_a_write_session_is_refused(db: Database) -> None:
    async with db.session():
        with pytest.raises(RuntimeError, match="wait for itself"):
            await db.write(lambda conn: None)


@sqlite_only
async def test_a_write_waits_out_another_connections_write_lock(db: Database) -> None:
    holder = sqlite3.connect(str(make_url(db.url).database), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        # The write waits in SQLite's busy handler in its thread; the loop runs on and
        # lets the holder go.
        asyncio.get_running_loop().call_later(0.3, holder.rollback)
        await db.write(lambda conn: _add(conn, "105830016"))
        assert not holder.in_transaction  # written only once the lock was given up
    finally:
        holder.close()
    assert await _iks(db) == ["105830016"]


@sqlite_only
async def test_a_write_no_one_waits_for_any_more_still_ends_before_the_next_begins(
    db: Database,
) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    def slow(conn: Connection) -> None:
        _add(conn, "105830016")
        loop.call_soon_threadsafe(started.set)
        # Held until the test lets it go: its turn outlasts the task that waited for it.
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(timeout=10)

    waiting = asyncio.create_task(db.write(slow))
    await started.wait()
    waiting.cancel()
    after = asyncio.create_task(db.write(lambda conn: _add(conn, "190500027")))
    await asyncio.sleep(0.05)  # nothing to await: the point is that ``after`` waits
    assert not after.done()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await after
    assert await _iks(db) == ["105830016", "190500027"]


async def test_write_after_hands_what_prepare_returned_to_the_work(db: Database) -> None:
    steps: list[str] = []

    def prepare() -> str:
        steps.append("prepare")
        return "105830016"

    def work(conn: Connection, ik: str) -> int:
        steps.append("work")
        return _add(conn, ik)

    assert await db.write_after(prepare, work) > 0
    assert steps == ["prepare", "work"]
    assert await _iks(db) == ["105830016"]


async def test_write_after_whose_prepare_raises_writes_nothing(db: Database) -> None:
    def prepare() -> str:
        raise OSError("disk gone")

    def work(conn: Connection, ik: str) -> int:
        raise AssertionError("no transaction after a failed prepare")

    with pytest.raises(OSError, match="disk gone"):
        await db.write_after(prepare, work)
    assert await _iks(db) == []


@sqlite_only
async def test_write_after_while_another_write_holds_the_turn_queues_behind_it(
    db: Database,
) -> None:
    """Prepared outside the turn, then written after the write that held it."""
    order: list[str] = []
    holding, prepared, release = asyncio.Event(), threading.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.session():
            order.append("held")
            holding.set()
            await release.wait()
        order.append("released")

    held = asyncio.create_task(holder())
    await holding.wait()

    def prepare() -> str:
        order.append("prepare")
        prepared.set()
        return "105830016"

    def work(conn: Connection, ik: str) -> int:
        order.append("work")
        return _add(conn, ik)

    writing = asyncio.create_task(db.write_after(prepare, work))
    assert await asyncio.to_thread(prepared.wait, 10)
    release.set()
    await asyncio.gather(held, writing)
    assert order == ["held", "prepare", "released", "work"]
    assert await _iks(db) == ["105830016"]


@sqlite_only
async def test_writes_and_sessions_commit_to_disk_before_they_return(db: Database) -> None:
    """PRAGMA synchronous=FULL (2) on the connections that accept uploads: a document
    the client was told about survives a power loss, not only a crash."""

    def level(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar() or 0)

    assert await db.write(level) == 2
    async with db.session() as session:
        assert (await session.execute(text("PRAGMA synchronous"))).scalar() == 2
