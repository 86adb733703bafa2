"""sshfs (FUSE): cp and rsync onto the mount's /outbox deliver."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes

pytestmark = [
    pytest.mark.skipif(shutil.which("sshfs") is None, reason="sshfs is not installed"),
    pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="/dev/fuse is missing"),
]


async def _run(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def mount(server: Server, tmp_path: Path) -> AsyncIterator[Path]:
    """The depositor's tree mounted with sshfs's defaults."""
    point = tmp_path / "mnt"
    point.mkdir()
    options = (
        f"IdentityFile={server.key_path(MD_NW)},StrictHostKeyChecking=no,"
        f"UserKnownHostsFile=/dev/null,port={server.port}"
    )
    log = tmp_path / "sshfs.log"
    with log.open("wb") as output:
        # Not a pipe: the daemon sshfs leaves behind would hold it open.
        proc = await asyncio.create_subprocess_exec(
            "sshfs", "-o", options, f"{MD_NW}@127.0.0.1:/", str(point),
            stdout=output, stderr=output,
        )  # fmt: skip
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0, log.read_text(errors="replace")
    try:
        yield point
    finally:
        code, out = await _run("fusermount3", "-u", str(point))
        assert code == 0, out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _inbox(server: Server, tmp_path: Path) -> dict[str, str]:
    target = tmp_path / "abholung"
    target.mkdir(exist_ok=True)
    code, _, err = await server.sftp_batch(LV_NW, "get /inbox/*\n", target)
    assert code == 0, err
    return {p.name: _sha(p.read_bytes()) for p in target.iterdir()}


async def test_cp_onto_the_sshfs_mount_delivers_and_shows_the_document(
    server: Server, mount: Path, tmp_path: Path
) -> None:
    name = f"{FACILITY_NW}_sshfs_cp.pdf"
    data = pdf_bytes(1_500_000, seed=b"sshfs cp")
    (tmp_path / name).write_bytes(data)
    code, out = await _run("cp", str(tmp_path / name), str(mount / "outbox") + "/")
    assert code == 0, out
    # Off the loop: the mount's answer comes from the server running on it.
    shown = await asyncio.to_thread((mount / "outbox" / name).stat)
    assert shown.st_size == len(data)
    assert await _inbox(server, tmp_path) == {name: _sha(data)}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
async def test_rsync_onto_the_sshfs_mount_delivers_through_its_temp_name(
    server: Server, mount: Path, tmp_path: Path
) -> None:
    source = tmp_path / "quelle"
    source.mkdir()
    files = {
        f"{FACILITY_NW}_rsync_a.pdf": pdf_bytes(700_000, seed=b"rsync a"),
        f"{FACILITY_NW}_rsync_b.pdf": pdf_bytes(90_000, seed=b"rsync b"),
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    # -t keeps times, which rsync sets on its temp file before renaming it.
    code, out = await _run("rsync", "-rt", str(source) + "/", str(mount / "outbox") + "/")
    assert code == 0, out
    assert await _inbox(server, tmp_path) == {n: _sha(d) for n, d in files.items()}
    # A second run finds sizes and times equal and sends nothing (rsync's quick check).
    code, out = await _run(
        "rsync", "-rt", "--itemize-changes", str(source) + "/", str(mount / "outbox") + "/"
    )
    assert code == 0 and out.strip() == "", out
