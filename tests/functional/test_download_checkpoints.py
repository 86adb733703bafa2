"""Open downloads are checkpointed: what a node served before it died still counts
towards the receipt of a download resumed elsewhere, and a checkpointed download
still makes exactly one receipt."""

from __future__ import annotations

from sqlalchemy import func, select

from qprserver.db.models import DownloadCoverage, DownloadReceipt
from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"
SIZE = 600_000


async def _put(server: Server, data: bytes) -> None:
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(data)


async def _count(server: Server, model: type) -> int:
    async with server.db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_checkpoint_keeps_the_served_half_and_a_resumed_download_completes_it_once(
    server: Server,
) -> None:
    data = pdf_bytes(SIZE, seed=b"half")
    await _put(server, data)
    recorder = server.listener.ctx.receipts
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open(f"/inbox/{REPORT}", "rb")
        first = await f.read(SIZE // 2)
        recorder.checkpoint()
        await recorder.flush()
        # The node could die now: the first half is in the database already.
        assert await _count(server, DownloadCoverage) == 1
        assert await _count(server, DownloadReceipt) == 0
        await f.close()
    async with (
        server.connect(LV_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        await f.seek(SIZE // 2)
        rest = await f.read()
    assert first + rest == data
    await recorder.flush()
    assert await _count(server, DownloadReceipt) == 1
    assert await _count(server, DownloadCoverage) == 0


async def test_a_download_checkpointed_midway_and_finished_makes_one_receipt(
    server: Server,
) -> None:
    data = pdf_bytes(SIZE, seed=b"whole")
    await _put(server, data)
    recorder = server.listener.ctx.receipts
    async with (
        server.connect(LV_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        head = await f.read(1000)
        recorder.checkpoint()
        recorder.checkpoint()  # nothing new: nothing queued twice
        await recorder.flush()
        tail = await f.read()
    assert head + tail == data
    await recorder.flush()
    assert await _count(server, DownloadReceipt) == 1
    assert await _count(server, DownloadCoverage) == 0
