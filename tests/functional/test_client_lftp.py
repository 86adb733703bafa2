"""lftp over SFTP: put (with and without its temp file), mirror -R, put -c after a cut."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.functional.harness import (
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Server,
    pdf_bytes,
    wait_until_under_way,
)

pytestmark = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")


def _lftp_args(server: Server, ik: str, script: str) -> list[str]:
    ssh = " ".join(["ssh", "-a", "-x", *server.openssh_args(ik)])
    return [
        "lftp",
        "-u",
        f"{ik},",  # no password: the key logs in
        "-e",
        f"set sftp:connect-program '{ssh}'; {script}; bye",
        f"sftp://127.0.0.1:{server.port}",
    ]


async def _lftp(server: Server, ik: str, script: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *_lftp_args(server, ik, script),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _inbox(server: Server, tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "abholung"
    target.mkdir(exist_ok=True)
    code, out, err = await server.sftp_batch(LV_NW, "ls -1 /inbox\n", target)
    assert code == 0, err
    if "/inbox/" not in out:
        return {}
    code, _, err = await server.sftp_batch(LV_NW, "get /inbox/*\n", target)
    assert code == 0, err
    return {p.name: _sha(p.read_bytes()) for p in target.iterdir()}


async def _outcomes(server: Server, tmp_path: Path) -> list[str]:
    code, out, err = await server.sftp_batch(MD_NW, "ls -1 /receipts\n", tmp_path)
    assert code == 0, err
    return [line.split("_")[2] for line in out.splitlines() if line.endswith(".json")]


@pytest.mark.parametrize("temp_file", ["no", "yes"])
async def test_lftp_put_delivers_and_a_repeated_put_is_unchanged(
    server: Server, tmp_path: Path, temp_file: str
) -> None:
    name = f"{FACILITY_NW}_lftp.pdf"
    data = pdf_bytes(2_000_000, seed=b"lftp put")
    (tmp_path / name).write_bytes(data)
    script = f"set xfer:use-temp-file {temp_file}; put {name} -o /outbox/{name}"
    code, out = await _lftp(server, MD_NW, f"{script}; {script}; cls -l /outbox", tmp_path)
    assert code == 0, out
    (line,) = [x for x in out.splitlines() if x.endswith(f"/outbox/{name}")]
    assert line.startswith("-r--------") and f" {len(data)} " in line, out
    assert await _inbox(server, tmp_path) == {name: _sha(data)}
    assert await _outcomes(server, tmp_path) == ["accepted", "unchanged"]


async def test_lftp_mirror_reverse_uploads_a_folder_once(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "quelle"
    source.mkdir()
    files = {
        f"{FACILITY_NW}_mirror_{i}.pdf": pdf_bytes(50_000 * (i + 1), seed=bytes([i]))
        for i in range(3)
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    code, out = await _lftp(server, MD_NW, "mirror -R quelle /outbox", tmp_path)
    assert code == 0, out
    assert await _inbox(server, tmp_path) == {n: _sha(d) for n, d in files.items()}
    # lftp sets the times it uploaded; the /outbox shows them, so nothing is new.
    code, out = await _lftp(server, MD_NW, "mirror -R -v quelle /outbox", tmp_path)
    assert code == 0, out
    assert "Transferring" not in out, out
    assert await _outcomes(server, tmp_path) == ["accepted"] * 3


@pytest.mark.parametrize("temp_file", ["no", "yes"])
async def test_lftp_put_continue_resumes_an_upload_cut_off_by_a_killed_client(
    server: Server, tmp_path: Path, temp_file: str
) -> None:
    name = f"{FACILITY_NW}_gross.pdf"
    with (tmp_path / name).open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.write(os.urandom(16 * 1024 * 1024))
        handle.write(b"\n%%EOF\n")
    data = (tmp_path / name).read_bytes()
    settings = f"set xfer:use-temp-file {temp_file}"
    proc = await asyncio.create_subprocess_exec(
        *_lftp_args(
            server,
            MD_NW,
            f"{settings}; set net:limit-rate 4000000; put {name} -o /outbox/{name}",
        ),
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_until_under_way(server, len(data))
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    for _ in range(500):  # its ssh child sees lftp gone and closes the connection
        if not server.listener.connections:
            break
        await asyncio.sleep(0.02)
    await server.settled()
    assert await _inbox(server, tmp_path) == {}
    (kept,) = server.temp_files()
    kept_inode = kept.stat().st_ino
    code, out = await _lftp(
        server, MD_NW, f"{settings}; put -c {name} -o /outbox/{name}; cls -l /outbox", tmp_path
    )
    assert code == 0, out
    assert await _inbox(server, tmp_path) == {name: _sha(data)}
    assert await _outcomes(server, tmp_path) == ["accepted"]
    assert server.temp_files() == []
    # Resumed, not sent again: the kept file itself became the stored document.
    assert server.listener.ctx.blobs.path_for(_sha(data)).stat().st_ino == kept_inode
