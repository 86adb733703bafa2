"""Many uploads completing at the same moment: every one becomes a document.

Run by hand for the figures: ``pytest -s tests/functional/test_concurrent_uploads.py``
prints the time and the failures of each run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from qprserver.db import engine
from qprserver.db.models import Document
from tests.conftest import BACKEND
from tests.functional.harness import FACILITY_NW, MD_NW, Running, Server, pdf_bytes

UPLOADS = 100
# Logins from one address are limited (security.max_unauthenticated_per_address = 10);
# the uploads themselves all run at once.
LOGINS_AT_ONCE = 8


async def _documents(server: Server) -> int:
    async with server.db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(Document)) or 0)


async def _upload_all_at_once(connect: Callable[[str], Any]) -> list[BaseException]:
    """UPLOADS sessions each write a file, then all close at the same moment."""
    logins = asyncio.Semaphore(LOGINS_AT_ONCE)
    all_written = asyncio.Barrier(UPLOADS)

    async def upload(i: int) -> None:
        try:
            async with logins:
                conn = await connect(MD_NW)
        finally:
            # A failed login must not leave the others waiting at the barrier.
            await all_written.wait()
        async with conn, conn.start_sftp_client() as sftp:
            f = await sftp.open(f"/outbox/{FACILITY_NW}_bericht_{i:03d}.pdf", "wb")
            await f.write(pdf_bytes(50_000, seed=str(i).encode()))
            await f.close()  # where the document is committed

    started = time.monotonic()
    results = await asyncio.gather(*(upload(i) for i in range(UPLOADS)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    print(f"\n{UPLOADS} uploads in {time.monotonic() - started:.1f} s, {len(failures)} failed")
    return failures


async def test_a_hundred_uploads_at_once_all_become_documents(server: Server) -> None:
    assert await _upload_all_at_once(server.connect) == []
    assert await _documents(server) == UPLOADS


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_a_hundred_uploads_at_once_to_two_worker_processes_all_become_documents(
    running: Running,
) -> None:
    assert await _upload_all_at_once(running.connect) == []
    assert len(await running.documents()) == UPLOADS


sqlite_only = pytest.mark.skipif(
    BACKEND != "sqlite", reason="SQLite's database-wide write lock; PostgreSQL locks rows"
)


async def _upload_while_locked(server: Server, hold: float) -> None:
    """Close an upload while another connection (as another process would) holds the
    database's write lock for ``hold`` seconds; the upload must wait, then succeed."""
    path = make_url(server.settings.database.url).database
    assert path is not None
    other = sqlite3.connect(path, isolation_level=None)
    try:
        async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
            f = await sftp.open(f"/outbox/{FACILITY_NW}_gesperrt.pdf", "wb")
            await f.write(pdf_bytes(10_000))
            other.execute("BEGIN IMMEDIATE")
            closing = asyncio.create_task(f.close())
            # Holding a lock for a while is the point here; there is no event to await.
            await asyncio.sleep(hold)
            assert not closing.done(), "the upload did not wait for the write lock"
            other.execute("COMMIT")
            await closing
    finally:
        other.close()
    assert await _documents(server) == 1


@pytest.fixture
def short_busy_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tries at the write lock of half a second (set before the database is made)."""
    monkeypatch.setattr(engine, "BUSY_ATTEMPT_SECONDS", 0.5)


@sqlite_only
async def test_an_upload_waits_out_another_process_holding_the_write_lock_across_tries(
    short_busy_tries: None, server: Server
) -> None:
    await _upload_while_locked(server, hold=1.6)  # three tries pass meanwhile


@pytest.mark.slow
@sqlite_only
async def test_an_upload_waits_out_a_write_lock_held_longer_than_thirty_seconds(
    server: Server,
) -> None:
    # Thirty seconds was the longest any write waited before it failed the client.
    await _upload_while_locked(server, hold=32)
