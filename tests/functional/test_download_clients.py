"""Recipients download with the clients they really use, resumed and in parallel.

Each resumed or parallel download must leave exactly one receipt (sftp/receipts.py,
coverage.py). Where a test needs "an earlier, interrupted download", the first part
is read with asyncssh by the same account: the server sees exactly what an
interrupted client would have been served, without a race against a kill.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import shutil
import stat
from pathlib import Path

import asyncssh
import paramiko
import pytest

from qprserver.db.engine import Database
from qprserver.service import build_context
from qprserver.sftp.server import SFTPListener
from tests.functional.harness import (
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Server,
    download_receipts,
    paramiko_sftp,
    pdf_bytes,
)

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"
INBOX_REPORT = f"/inbox/{REPORT}"

needs_lftp = pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
needs_sftp = pytest.mark.skipif(shutil.which("sftp") is None, reason="OpenSSH sftp not installed")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _deposit(server: Server, data: bytes) -> None:
    """MD NW sends REPORT; it reaches LV NW and the facility."""
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(data)


async def _read_part(server: Server, ik: str, start: int, end: int) -> bytes:
    """Read [start, end) of the inbox report in a session of its own, then close."""
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(INBOX_REPORT, "rb") as f,
    ):
        return bytes(await f.read(end - start, start))


async def _run(*args: str, cwd: Path, stdin: bytes | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


# -- asyncssh: the protocol itself ------------------------------------------------------


async def test_a_read_of_part_of_a_file_records_no_receipt(server: Server) -> None:
    data = pdf_bytes(600_000, seed=b"part")
    await _deposit(server, data)
    assert await _read_part(server, LV_NW, 0, 300_000) == data[:300_000]
    assert await download_receipts(server, LV_NW) == 0


async def test_a_download_resumed_in_a_new_session_records_one_receipt(server: Server) -> None:
    data = pdf_bytes(600_000, seed=b"resumed")
    await _deposit(server, data)
    first = await _read_part(server, LV_NW, 0, 250_000)
    assert await download_receipts(server, LV_NW) == 0
    rest = await _read_part(server, LV_NW, 250_000, len(data))
    assert first + rest == data
    assert await download_receipts(server, LV_NW) == 1


async def test_parts_read_over_four_connections_at_once_record_one_receipt(
    server: Server,
) -> None:
    data = pdf_bytes(1_000_000, seed=b"parallel")
    await _deposit(server, data)
    bounds = [0, 250_000, 500_000, 750_000, len(data)]
    parts = await asyncio.gather(
        *(_read_part(server, LV_NW, a, b) for a, b in itertools.pairwise(bounds))
    )
    assert b"".join(parts) == data
    assert await download_receipts(server, LV_NW) == 1


async def test_halves_read_through_two_server_processes_record_one_receipt(
    server: Server,
) -> None:
    # A second listener with its own database engines and receipt writer: what a
    # second worker process on the same database has.
    data = pdf_bytes(800_000, seed=b"two processes")
    await _deposit(server, data)
    other_db = Database(server.db.settings)
    second = SFTPListener(build_context(server.settings, other_db, server.notifier))
    await second.start()
    try:
        other = Server(server.root, server.settings, other_db, second, server.keys)
        await asyncio.gather(
            _read_part(server, LV_NW, 0, 400_000), _read_part(other, LV_NW, 400_000, len(data))
        )
        await asyncio.wait_for(second.ctx.sessions.none_open(), 30)
        # Both writers settle at once: one of them completes the file.
        await asyncio.gather(server.listener.ctx.receipts.flush(), second.ctx.receipts.flush())
    finally:
        await second.stop(grace=0)
        await other_db.dispose()
    assert await download_receipts(server, LV_NW) == 1


async def test_parts_read_by_two_accounts_make_no_receipt_for_either(server: Server) -> None:
    data = pdf_bytes(400_000, seed=b"two accounts")
    await _deposit(server, data)
    await _read_part(server, LV_NW, 0, 200_000)
    await _read_part(server, FACILITY_NW, 200_000, len(data))
    assert await download_receipts(server, LV_NW) == 0
    assert await download_receipts(server, FACILITY_NW) == 0


async def test_after_a_receipt_an_earlier_part_counts_no_more(server: Server) -> None:
    # The first half read before a complete download is used up by its receipt: the
    # second half read afterwards is no second download.
    data = pdf_bytes(400_000, seed=b"used up")
    await _deposit(server, data)
    await _read_part(server, LV_NW, 0, 200_000)
    await _read_part(server, LV_NW, 0, len(data))
    await _read_part(server, LV_NW, 200_000, len(data))
    assert await download_receipts(server, LV_NW) == 1


async def test_parts_settled_in_one_batch_record_one_receipt(server: Server) -> None:
    # Closes that arrive within one write interval are settled together.
    data = pdf_bytes(300_000, seed=b"one batch")
    await _deposit(server, data)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        for start, end in ((0, 100_000), (100_000, 200_000), (200_000, len(data))):
            async with sftp.open(INBOX_REPORT, "rb") as f:
                await f.read(end - start, start)
    assert await download_receipts(server, LV_NW) == 1


# -- paramiko ---------------------------------------------------------------------------


async def test_paramiko_get_and_listdir_attr(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(700_000, seed=b"paramiko")
    await _deposit(server, data)

    def fetch() -> list[paramiko.SFTPAttributes]:
        with paramiko_sftp(server, LV_NW) as sftp:
            listed = sftp.listdir_attr("/inbox")
            sftp.get(INBOX_REPORT, str(tmp_path / REPORT))
            return listed

    listed = await asyncio.to_thread(fetch)
    assert [(a.filename, a.st_size) for a in listed] == [(REPORT, len(data))]
    assert listed[0].st_mode is not None and stat.S_ISREG(listed[0].st_mode)
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


# -- OpenSSH sftp -----------------------------------------------------------------------


@needs_sftp
async def test_openssh_get_records_one_receipt(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(900_000, seed=b"openssh get")
    await _deposit(server, data)
    code, _, err = await server.sftp_batch(LV_NW, f"get {INBOX_REPORT}\n", tmp_path)
    assert code == 0, err
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


@needs_sftp
async def test_openssh_reget_completes_an_interrupted_download_with_one_receipt(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(900_000, seed=b"openssh reget")
    await _deposit(server, data)
    (tmp_path / REPORT).write_bytes(await _read_part(server, LV_NW, 0, 400_000))
    assert await download_receipts(server, LV_NW) == 0
    code, _, err = await server.sftp_batch(LV_NW, f"reget {INBOX_REPORT}\n", tmp_path)
    assert code == 0, err
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


# -- lftp -------------------------------------------------------------------------------


async def _lftp(server: Server, ik: str, commands: str, cwd: Path) -> tuple[int, str]:
    ssh = " ".join(
        ["ssh", "-a", "-x", *server.openssh_args(ik)]
    )  # lftp's own default is "ssh -a -x"; only the key and host-key options are added
    script = (
        "set cmd:fail-exit yes; set net:max-retries 1; "
        f'set sftp:connect-program "{ssh}"; '
        f"open -u {ik}, -p {server.port} sftp://127.0.0.1; {commands}"
    )
    return await _run("lftp", "-c", script, cwd=cwd)


@needs_lftp
async def test_lftp_mirror_downloads_the_inbox_with_one_receipt(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(500_000, seed=b"lftp mirror")
    await _deposit(server, data)
    code, out = await _lftp(server, LV_NW, "mirror /inbox local", tmp_path)
    assert code == 0, out
    assert _sha((tmp_path / "local" / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


@needs_lftp
async def test_lftp_pget_in_four_parts_records_one_receipt(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(6_000_000, seed=b"lftp pget")
    await _deposit(server, data)
    code, out = await _lftp(server, LV_NW, f"pget -n 4 {INBOX_REPORT}", tmp_path)
    assert code == 0, out
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


@needs_lftp
async def test_lftp_reget_completes_an_interrupted_download_with_one_receipt(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(900_000, seed=b"lftp reget")
    await _deposit(server, data)
    (tmp_path / REPORT).write_bytes(await _read_part(server, LV_NW, 0, 300_000))
    assert await download_receipts(server, LV_NW) == 0
    code, out = await _lftp(server, LV_NW, f"reget {INBOX_REPORT}", tmp_path)
    assert code == 0, out
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


# -- curl -------------------------------------------------------------------------------


def _curl_args(server: Server, ik: str) -> list[str]:
    key = server.keys[ik]
    public = server.key_path(ik).with_suffix(".pub")
    key.write_public_key(public)
    host_key = asyncssh.read_private_key(server.settings.server.host_keys[0])
    host_sha256 = base64.b64encode(hashlib.sha256(host_key.public_data).digest()).decode()
    return [
        "curl",
        "--silent",
        "--show-error",
        "--user",
        f"{ik}:",
        "--key",
        str(server.key_path(ik)),
        "--pubkey",
        str(public),
        "--hostpubsha256",
        host_sha256,
    ]


def _url(server: Server, path: str) -> str:
    return f"sftp://127.0.0.1:{server.port}{path}"


@needs_curl
async def test_curl_download_records_one_receipt(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(800_000, seed=b"curl get")
    await _deposit(server, data)
    code, out = await _run(
        *_curl_args(server, LV_NW), "-o", REPORT, _url(server, INBOX_REPORT), cwd=tmp_path
    )
    assert code == 0, out
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


@needs_curl
async def test_curl_range_then_resume_records_one_receipt(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(800_000, seed=b"curl resume")
    await _deposit(server, data)
    args = _curl_args(server, LV_NW)
    code, out = await _run(
        *args, "-r", "0-299999", "-o", REPORT, _url(server, INBOX_REPORT), cwd=tmp_path
    )
    assert code == 0, out
    assert (tmp_path / REPORT).read_bytes() == data[:300_000]
    assert await download_receipts(server, LV_NW) == 0
    code, out = await _run(*args, "-C", "-", "-o", REPORT, _url(server, INBOX_REPORT), cwd=tmp_path)
    assert code == 0, out
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1


@needs_curl
async def test_curl_quote_rm_after_download_acknowledges_into_archive(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(300_000, seed=b"curl rm")
    await _deposit(server, data)
    code, out = await _run(
        *_curl_args(server, LV_NW),
        "-o",
        REPORT,
        "-Q",
        f"-rm {INBOX_REPORT}",
        _url(server, INBOX_REPORT),
        cwd=tmp_path,
    )
    assert code == 0, out
    assert _sha((tmp_path / REPORT).read_bytes()) == _sha(data)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert [n for n in await sftp.listdir("/inbox") if n not in (".", "..")] == []
        assert REPORT in await sftp.listdir("/archive")
    assert await download_receipts(server, LV_NW) == 1
