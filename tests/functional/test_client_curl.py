"""curl's sftp:// (libssh2): upload, -C - resume of a cut upload, -Q rename."""

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

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _curl_args(server: Server, ik: str, *args: str) -> list[str]:
    key = server.key_path(ik)
    public = key.with_suffix(".pub")
    if not public.exists():
        public.write_bytes(server.keys[ik].export_public_key())
    # -k: the test server's host key is new each run.
    return ["curl", "-sS", "-k", "--key", str(key), "--pubkey", str(public), "-u", f"{ik}:", *args]


async def _curl(server: Server, ik: str, *args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *_curl_args(server, ik, *args),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _url(server: Server, path: str) -> str:
    return f"sftp://127.0.0.1:{server.port}{path}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _collect(server: Server, name: str, tmp_path: Path) -> bytes:
    target = tmp_path / "abholung"
    target.mkdir(exist_ok=True)
    code, out = await _curl(server, LV_NW, "-o", name, _url(server, f"/inbox/{name}"), cwd=target)
    assert code == 0, out
    return (target / name).read_bytes()


async def test_curl_uploads_and_renames_a_temp_upload_with_quote_commands(
    server: Server, tmp_path: Path
) -> None:
    first = f"{FACILITY_NW}_curl.pdf"
    second = f"{FACILITY_NW}_curl_umbenannt.pdf"
    data = pdf_bytes(400_000, seed=b"curl")
    (tmp_path / "bericht.pdf").write_bytes(data)
    code, out = await _curl(
        server, MD_NW, "-T", "bericht.pdf", _url(server, f"/outbox/{first}"), cwd=tmp_path
    )
    assert code == 0, out
    # Upload under a temp name; "-Q -rename" runs after the transfer.
    code, out = await _curl(
        server,
        MD_NW,
        "-T",
        "bericht.pdf",
        "-Q",
        f"-rename /outbox/{second}.part /outbox/{second}",
        _url(server, f"/outbox/{second}.part"),
        cwd=tmp_path,
    )
    assert code == 0, out
    code, out = await _curl(server, MD_NW, "-l", _url(server, "/outbox/"), cwd=tmp_path)
    assert code == 0 and sorted(out.split()) == sorted([".", "..", first, second]), out
    assert await _collect(server, first, tmp_path) == data
    assert await _collect(server, second, tmp_path) == data


async def test_curl_continue_at_resumes_an_upload_cut_off_midway(
    server: Server, tmp_path: Path
) -> None:
    name = f"{FACILITY_NW}_curl_gross.pdf"
    with (tmp_path / name).open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.write(os.urandom(16 * 1024 * 1024))
        handle.write(b"\n%%EOF\n")
    data = (tmp_path / name).read_bytes()
    proc = await asyncio.create_subprocess_exec(
        *_curl_args(
            server, MD_NW, "--limit-rate", "4M", "-T", name, _url(server, f"/outbox/{name}")
        ),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_until_under_way(server, len(data))
    proc.send_signal(signal.SIGKILL)  # the TCP connection drops with it
    await proc.wait()
    for _ in range(500):
        if not server.listener.connections:
            break
        await asyncio.sleep(0.02)
    await server.settled()
    (kept,) = server.temp_files()
    kept_inode = kept.stat().st_ino
    code, out = await _curl(
        server, MD_NW, "-C", "-", "-T", name, _url(server, f"/outbox/{name}"), cwd=tmp_path
    )
    assert code == 0, out
    assert _sha(await _collect(server, name, tmp_path)) == _sha(data)
    # Resumed, not sent again: the kept file itself became the stored document.
    assert server.listener.ctx.blobs.path_for(_sha(data)).stat().st_ino == kept_inode
    assert server.temp_files() == []
