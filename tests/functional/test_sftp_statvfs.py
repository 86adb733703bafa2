"""``df`` over SFTP shows the account's own space, never the host's file system."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qprserver.quota import BLOCK
from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


async def _upload(server: Server, data: bytes) -> None:
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(data)


async def test_a_depositor_sees_its_quota_and_what_its_documents_use(server: Server) -> None:
    quota = server.settings.storage.depositor_quota_bytes
    data = pdf_bytes(1_000_000, seed=b"df")
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        before = await sftp.statvfs("/outbox")
        await _upload(server, data)
        after = await sftp.statvfs("/")
    assert before.frsize == BLOCK and before.blocks * BLOCK == quota
    assert before.bavail == before.bfree == before.blocks and before.flags == 0
    assert after.blocks == before.blocks
    assert after.bavail == -(-(quota - len(data)) // BLOCK)


async def test_a_recipient_sees_what_it_holds_read_only_and_nothing_free(
    server: Server,
) -> None:
    data = pdf_bytes(500_000, seed=b"df recipient")
    await _upload(server, data)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        vfs = await sftp.statvfs("/inbox")
        async with sftp.open(f"/inbox/{REPORT}", "rb") as f:
            fvfs = await f.statvfs()
    assert vfs.blocks == -(-len(data) // BLOCK)
    assert vfs.bfree == vfs.bavail == 0
    assert vfs.flags & 0x1  # read-only
    assert (fvfs.blocks, fvfs.bavail, fvfs.flags) == (vfs.blocks, vfs.bavail, vfs.flags)
    assert (vfs.files, vfs.ffree) == (0, 0)


async def test_statvfs_of_a_place_that_does_not_exist_fails(server: Server) -> None:
    import asyncssh

    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.statvfs("/outbox")


@pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH sftp not installed")
async def test_openssh_df_shows_the_depositor_quota(server: Server, tmp_path: Path) -> None:
    code, out, err = await server.sftp_batch(MD_NW, "df /outbox\n", tmp_path)
    assert code == 0, err
    quota_kib = server.settings.storage.depositor_quota_bytes // 1024
    (line,) = [x for x in out.splitlines() if x.split() and x.split()[0].isdigit()]
    size, used, avail = (int(v) for v in line.split()[:3])
    assert (size, used, avail) == (quota_kib, 0, quota_kib), out
