"""rclone with a plain ``sftp`` remote (key file, port, known hosts; no extra flags)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlalchemy import select

from qprserver.db.models import UploadProtocol
from tests.functional.harness import (
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Server,
    download_receipts,
    pdf_bytes,
)

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


class Rclone:
    """rclone against one account, configured only through environment variables."""

    def __init__(self, server: Server, ik: str, workdir: Path) -> None:
        known_hosts = workdir / f"known_hosts_{ik}"
        host_key = asyncssh.read_private_key(server.settings.server.host_keys[0])
        known_hosts.write_bytes(
            f"[127.0.0.1]:{server.port} ".encode() + host_key.export_public_key()
        )
        self.env = {
            **os.environ,
            "RCLONE_CONFIG": str(workdir / "rclone.conf"),  # none: the remote is all env
            "RCLONE_CONFIG_QPR_TYPE": "sftp",
            "RCLONE_CONFIG_QPR_HOST": "127.0.0.1",
            "RCLONE_CONFIG_QPR_PORT": str(server.port),
            "RCLONE_CONFIG_QPR_USER": ik,
            "RCLONE_CONFIG_QPR_KEY_FILE": str(server.key_path(ik)),
            "RCLONE_CONFIG_QPR_KNOWN_HOSTS_FILE": str(known_hosts),
        }
        self.workdir = workdir

    async def run(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            "rclone",
            *args,
            env=self.env,
            cwd=self.workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, f"rclone {' '.join(args)}: {err}"
        return out

    async def lsjson(self, path: str) -> list[dict[str, Any]]:
        return list(json.loads(await self.ok("lsjson", f"qpr:{path}")))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _deposit(server: Server, tmp_path: Path, data: bytes) -> None:
    source = tmp_path / "deposit"
    source.mkdir(exist_ok=True)
    (source / REPORT).write_bytes(data)
    code, _, err = await server.sftp_batch(MD_NW, f"put {REPORT} /outbox/\n", source)
    assert code == 0, err


async def test_rclone_copy_to_outbox_delivers_a_file_whose_size_is_no_multiple_of_32_kib(
    server: Server, tmp_path: Path
) -> None:
    # rclone 1.60's last short write carries stale bytes after its data (sftp/compat.py).
    data = pdf_bytes(300_000, seed=b"rclone copy")
    source = tmp_path / "source"
    source.mkdir()
    (source / REPORT).write_bytes(data)
    rclone = Rclone(server, MD_NW, tmp_path)
    code, _, err = await rclone.run("copy", str(source), "qpr:/outbox")
    assert code == 0 and "SSH_FX_BAD_MESSAGE" not in err, err
    target = tmp_path / "target"
    target.mkdir()
    code, _, err = await server.sftp_batch(LV_NW, f"get /inbox/{REPORT}\n", target)
    assert code == 0, err
    assert _sha((target / REPORT).read_bytes()) == _sha(data)


async def test_rclone_lsjson_lists_the_inbox_with_sizes_and_times(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(123_456, seed=b"lsjson")
    await _deposit(server, tmp_path, data)
    listed = await Rclone(server, LV_NW, tmp_path).lsjson("/inbox")
    assert [(e["Name"], e["Size"], e["IsDir"]) for e in listed] == [(REPORT, len(data), False)]
    assert listed[0]["ModTime"]


async def test_rclone_copy_from_inbox_records_one_receipt_and_a_second_copy_reads_nothing(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(700_000, seed=b"rclone get")
    await _deposit(server, tmp_path, data)
    rclone = Rclone(server, LV_NW, tmp_path)
    await rclone.ok("copy", "qpr:/inbox", str(tmp_path / "local"))
    assert _sha((tmp_path / "local" / REPORT).read_bytes()) == _sha(data)
    assert await download_receipts(server, LV_NW) == 1
    code, _, err = await rclone.run("copy", "-v", "qpr:/inbox", str(tmp_path / "local"))
    assert code == 0 and "There was nothing to transfer" in err, err
    assert await download_receipts(server, LV_NW) == 1


async def test_rclone_check_finds_equal_and_different_copies(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(300_000, seed=b"rclone check")
    await _deposit(server, tmp_path, data)
    local = tmp_path / "local"
    local.mkdir()
    (local / REPORT).write_bytes(data)
    rclone = Rclone(server, LV_NW, tmp_path)
    # The server offers no hash command, so check compares sizes; --download the bytes.
    await rclone.ok("check", "qpr:/inbox", str(local))
    await rclone.ok("check", "--download", "qpr:/inbox", str(local))
    (local / REPORT).write_bytes(data[:-1] + b"X")
    code, _, err = await rclone.run("check", "--download", "qpr:/inbox", str(local))
    assert code != 0 and "1 differences found" in err, err


async def test_rclone_deletefile_acknowledges_into_archive(server: Server, tmp_path: Path) -> None:
    await _deposit(server, tmp_path, pdf_bytes(50_000, seed=b"rclone rm"))
    rclone = Rclone(server, LV_NW, tmp_path)
    await rclone.ok("deletefile", f"qpr:/inbox/{REPORT}")
    assert await rclone.lsjson("/inbox") == []
    assert [e["Name"] for e in await rclone.lsjson("/archive")] == [REPORT]


async def _protocol_outcomes(server: Server) -> list[str]:
    async with server.db.read_session() as session:
        rows = await session.scalars(select(UploadProtocol.outcome).order_by(UploadProtocol.id))
        return list(rows.all())


async def test_rclone_copy_and_sync_to_outbox_succeed_and_a_second_sync_uploads_nothing(
    server: Server, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    files = {
        REPORT: pdf_bytes(300_000, seed=b"sync 1"),
        f"{FACILITY_NW}_nachtrag.pdf": pdf_bytes(70_001, seed=b"sync 2"),
    }
    for name, data in files.items():
        (source / name).write_bytes(data)
    os.utime(source / REPORT, (1_700_000_000, 1_700_000_000))
    rclone = Rclone(server, MD_NW, tmp_path)
    # copy: upload, stat of the new name and SetModTime all succeed (exit 0).
    await rclone.ok("copy", str(source / REPORT), "qpr:/outbox")
    listed = {e["Name"]: e for e in await rclone.lsjson("/outbox")}
    assert listed[REPORT]["Size"] == len(files[REPORT])
    assert listed[REPORT]["ModTime"].startswith("2023-11-14T22:13:20")  # the time it set
    await rclone.ok("sync", str(source), "qpr:/outbox")
    assert sorted(e["Name"] for e in await rclone.lsjson("/outbox")) == sorted(files)
    assert await _protocol_outcomes(server) == ["accepted", "accepted"]
    # Sizes and times match: nothing is sent again, no protocol, no version.
    code, _, err = await rclone.run("sync", "-v", str(source), "qpr:/outbox")
    assert code == 0 and "There was nothing to transfer" in err, err
    assert await _protocol_outcomes(server) == ["accepted", "accepted"]
    # Even a forced upload of the same bytes makes no new version.
    await rclone.ok("copy", "--ignore-times", str(source / REPORT), "qpr:/outbox")
    assert await _protocol_outcomes(server) == ["accepted", "accepted", "unchanged"]
    target = tmp_path / "target"
    target.mkdir()
    code, _, err = await server.sftp_batch(LV_NW, "get /inbox/*\n", target)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files
