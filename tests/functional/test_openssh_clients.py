"""The mailbox with Debian's OpenSSH clients: sftp -b, scp, and a client killed midway."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from pathlib import Path

from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


async def test_sftp_batch_upload_collect_and_acknowledge(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(700_000)
    (tmp_path / REPORT).write_bytes(data)
    code, _, err = await server.sftp_batch(MD_NW, f"cd /outbox\nput {REPORT}\n", tmp_path)
    assert code == 0, err
    for ik in (LV_NW, FACILITY_NW):
        target = tmp_path / ik
        target.mkdir()
        code, out, err = await server.sftp_batch(ik, f"ls -l /inbox\nget /inbox/{REPORT}\n", target)
        assert code == 0, err
        assert REPORT in out and str(len(data)) in out
        got = (target / REPORT).read_bytes()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    code, out, err = await server.sftp_batch(
        LV_NW, f"rm /inbox/{REPORT}\nls /inbox\nls /archive\n", tmp_path
    )
    assert code == 0, err
    assert out.count(REPORT) == 2  # the rm line and the archive listing; not the inbox


async def test_sftp_put_to_a_temp_name_then_rename(server: Server, tmp_path: Path) -> None:
    (tmp_path / "upload.bin").write_bytes(pdf_bytes(300_000))
    code, _, err = await server.sftp_batch(
        MD_NW,
        f"put upload.bin /outbox/{REPORT}.filepart\n"
        f"rename /outbox/{REPORT}.filepart /outbox/{REPORT}\n",
        tmp_path,
    )
    assert code == 0, err
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and REPORT in out


async def test_scp_upload_and_download_exit_zero(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(400_000, seed=b"scp")
    (tmp_path / REPORT).write_bytes(data)
    code, out = await server.scp(MD_NW, REPORT, f"{MD_NW}@127.0.0.1:/outbox/", cwd=tmp_path)
    assert code == 0, out
    code, out = await server.scp(
        LV_NW, f"{LV_NW}@127.0.0.1:/inbox/{REPORT}", "copy.pdf", cwd=tmp_path
    )
    assert code == 0, out
    assert (tmp_path / "copy.pdf").read_bytes() == data


async def test_truncated_pdf_makes_sftp_fail_and_reaches_nobody(
    server: Server, tmp_path: Path
) -> None:
    (tmp_path / REPORT).write_bytes(pdf_bytes(100_000)[:60_000])
    code, _, _ = await server.sftp_batch(MD_NW, f"put {REPORT} /outbox/\n", tmp_path)
    assert code != 0
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and REPORT not in out


async def test_a_killed_sftp_client_leaves_nothing_behind(server: Server, tmp_path: Path) -> None:
    big = tmp_path / REPORT
    with big.open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.write(os.urandom(64 * 1024 * 1024))
        handle.write(b"\n%%EOF\n")
    proc = await asyncio.create_subprocess_exec(
        "sftp",
        *server.openssh_args(MD_NW),
        "-P",
        str(server.port),
        "-b",
        "-",
        f"{MD_NW}@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    proc.stdin.write(f"put {REPORT} /outbox/\n".encode())
    await proc.stdin.drain()
    # Wait (bounded) until the upload is under way on the server, then kill the client.
    for _ in range(400):
        files = server.temp_files()
        if files and files[0].stat().st_size > 1024 * 1024:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("upload never started")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    for _ in range(500):
        if not server.listener.connections and not server.temp_files():
            break
        await asyncio.sleep(0.02)
    assert server.temp_files() == []
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and REPORT not in out
    code, out, _ = await server.sftp_batch(MD_NW, "ls /receipts\n", tmp_path)
    assert code == 0 and "accepted" not in out and "rejected" not in out
