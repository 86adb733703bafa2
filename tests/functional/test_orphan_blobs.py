"""A server killed between storing a blob and committing its row leaves no blob for long."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from qprserver.audit.chain import CHAIN_LOCK, LANES
from qprserver.config import load_config
from tests.conftest import BACKEND
from tests.functional.conftest import Instance
from tests.functional.harness import (
    FACILITY_NW,
    MD_NW,
    Running,
    pdf_bytes,
    serve_process,
    wait_listening,
)


@contextlib.asynccontextmanager
async def _commits_held(config: Path) -> AsyncIterator[None]:
    """Hold back every commit of the server: SQLite's write lock, or on PostgreSQL
    the advisory locks of every lane of the audit chain, one of which each upload
    takes before it commits."""
    settings = load_config(config).database
    if BACKEND == "sqlite":
        path = make_url(settings.url).database
        assert path is not None
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    engine = create_async_engine(settings.url)
    try:
        async with engine.connect() as conn:
            for lane in range(LANES):
                await conn.execute(
                    text("SELECT pg_advisory_lock(:key, :lane)"), {"key": CHAIN_LOCK, "lane": lane}
                )
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock_all()"))
    finally:
        await engine.dispose()


async def _until(condition: Callable[[], bool], what: str) -> None:
    # Another process writes the file; there is no event to await across processes.
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def _blobs(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "blobs").rglob("*") if p.is_file()}


async def _put(run: Running, name: str, data: bytes) -> None:
    async with (
        run.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as f,
    ):
        await f.write(data)


async def test_a_blob_left_by_a_killed_server_is_listed_by_the_dry_run_and_swept_at_start(
    running: Running,
) -> None:
    data_dir = running.config.parent / "data"
    kept = pdf_bytes(seed=b"kept")
    await _put(running, f"{FACILITY_NW}_bleibt.pdf", kept)
    lost = pdf_bytes(seed=b"lost")
    lost_sha = hashlib.sha256(lost).hexdigest()

    async with running.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open(f"/outbox/{FACILITY_NW}_verloren.pdf", "wb")
        await f.write(lost)
        async with _commits_held(running.config):
            closing = asyncio.create_task(f.close())
            await _until(lambda: lost_sha in _blobs(data_dir), "the blob is stored")
            running.proc.send_signal(signal.SIGKILL)
            await running.proc.wait()
        with contextlib.suppress(asyncssh.Error, OSError):
            await closing
    assert await running.documents() == [f"{FACILITY_NW}_bleibt.pdf"]
    assert lost_sha in _blobs(data_dir)

    # With no grace period, the orphan is due at once.
    text_ = running.config.read_text()
    running.config.write_text(
        text_.replace('data_dir = "data"\n', 'data_dir = "data"\norphan_grace = 0.0\n', 1)
    )
    instance = Instance(running.config.parent, running.config)
    dry = instance.json("jobs", "run", "retention", "--dry-run")
    assert dry["result"]["blobs"] == [lost_sha]
    assert lost_sha in _blobs(data_dir)  # a dry run only lists

    running.proc = await serve_process(running.config)
    await wait_listening(running)
    assert _blobs(data_dir) == {hashlib.sha256(kept).hexdigest()}
    async with running.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/outbox") is not None  # serving as before
    running.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0
