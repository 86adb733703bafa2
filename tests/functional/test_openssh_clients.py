"""The mailbox with Debian's OpenSSH clients: sftp -b, scp (SFTP and legacy), a killed client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock
from qprserver.exchange import mailbox
from qprserver.jobs.registry import run_job
from qprserver.service import job_context
from tests.functional.harness import (
    ADMIN,
    FACILITY_NW,
    LV_BY,
    LV_NW,
    MD_NW,
    Server,
    pdf_bytes,
    start_sftp,
)

REPORT = f"{FACILITY_NW}_bericht.pdf"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listed(out: str) -> list[str]:
    """The file names that sftp's ``ls`` and ``ls -l`` commands printed, in order."""
    names: list[str] = []
    in_ls = False
    for line in out.splitlines():
        if line.startswith("sftp>"):
            in_ls = line.split()[1:2] == ["ls"]
        elif in_ls and line.startswith(("-", "d")) and len(line.split()) >= 9:
            names.append(os.path.basename(line.split()[-1]))
        elif in_ls:
            names.extend(os.path.basename(word) for word in line.split())
    return names


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
        assert _listed(out) == [REPORT], out
        (line,) = [x for x in out.splitlines() if x.startswith("-") and x.endswith(REPORT)]
        assert line.startswith("-r--------") and f" {len(data)} " in line, line
        assert _sha((target / REPORT).read_bytes()) == _sha(data)
    code, out, err = await server.sftp_batch(LV_BY, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == [], (out, err)
    code, _, err = await server.sftp_batch(LV_NW, f"rm /inbox/{REPORT}\n", tmp_path)
    assert code == 0, err
    code, out, err = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == [], (out, err)
    code, out, err = await server.sftp_batch(LV_NW, "ls /archive\n", tmp_path)
    assert code == 0 and _listed(out) == [REPORT], (out, err)
    # The facility's copy is its own: still in its inbox.
    code, out, err = await server.sftp_batch(FACILITY_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == [REPORT], (out, err)


async def test_sftp_put_to_a_temp_name_then_rename(server: Server, tmp_path: Path) -> None:
    data = pdf_bytes(300_000, seed=b"winscp")
    (tmp_path / "upload.bin").write_bytes(data)
    code, out, err = await server.sftp_batch(
        MD_NW,
        f"put upload.bin /outbox/{REPORT}.filepart\nls /outbox\n",
        tmp_path,
    )
    assert code == 0 and _listed(out) == [f"{REPORT}.filepart"], (out, err)
    # A temp name is no document yet; the session's end throws it away.
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == []
    assert server.temp_files() == []
    code, _, err = await server.sftp_batch(
        MD_NW,
        f"put upload.bin /outbox/{REPORT}.filepart\n"
        f"rename /outbox/{REPORT}.filepart /outbox/{REPORT}\n",
        tmp_path,
    )
    assert code == 0, err
    code, out, _ = await server.sftp_batch(LV_NW, f"ls /inbox\nget /inbox/{REPORT}\n", tmp_path)
    assert code == 0 and _listed(out) == [REPORT]
    assert (tmp_path / REPORT).read_bytes() == data


async def test_scp_upload_and_download_exit_zero(server: Server, tmp_path: Path) -> None:
    # OpenSSH 9 scp speaks SFTP; it exits 1 unless the server sends an exit status.
    data = pdf_bytes(400_000, seed=b"scp")
    (tmp_path / REPORT).write_bytes(data)
    code, out = await server.scp(MD_NW, REPORT, f"{MD_NW}@127.0.0.1:/outbox/", cwd=tmp_path)
    assert code == 0, out
    code, out = await server.scp(
        LV_NW, f"{LV_NW}@127.0.0.1:/inbox/{REPORT}", "copy.pdf", cwd=tmp_path
    )
    assert code == 0, out
    assert (tmp_path / "copy.pdf").read_bytes() == data


async def test_legacy_scp_protocol_uploads_and_downloads_through_the_virtual_tree(
    server: Server, tmp_path: Path
) -> None:
    # asyncssh's scp server (scp.py, _scp_handler) wraps the session's SFTPServer in
    # SFTPServerFS and calls only its stat, scandir (globs), open, read, write, close,
    # setstat, mkdir and exit; nothing goes through map_path, so legacy scp sees the
    # same virtual tree with the same checks.
    data = pdf_bytes(250_000, seed=b"legacy")
    (tmp_path / REPORT).write_bytes(data)
    code, out = await server.scp(MD_NW, "-O", REPORT, f"{MD_NW}@127.0.0.1:/outbox/", cwd=tmp_path)
    assert code == 0, out
    code, out = await server.scp(
        LV_NW, "-O", f"{LV_NW}@127.0.0.1:/inbox/{REPORT}", "legacy.pdf", cwd=tmp_path
    )
    assert code == 0, out
    assert (tmp_path / "legacy.pdf").read_bytes() == data
    code, out = await server.scp(
        FACILITY_NW, "-O", f"{FACILITY_NW}@127.0.0.1:/inbox/*.pdf", "glob.pdf", cwd=tmp_path
    )
    assert code == 0, out
    assert (tmp_path / "glob.pdf").read_bytes() == data
    # A complete legacy download is a download like any other: it leaves a receipt.
    await server.listener.ctx.receipts.flush()
    async with server.db.read_session() as session:
        deliveries = await mailbox.deliveries_of_document(session, 1)
    downloads = {d["recipient"]: len(d["downloads"]) for d in deliveries}  # type: ignore[arg-type]
    assert downloads == {LV_NW: 1, FACILITY_NW: 1}, downloads


async def test_legacy_scp_failures_exit_non_zero_with_a_clear_message(
    server: Server, tmp_path: Path
) -> None:
    # Missing and foreign files look alike: asyncssh's glob finds nothing either way.
    for ik, path in ((LV_NW, "/inbox/fehlt.pdf"), (LV_BY, f"/inbox/{REPORT}"), (LV_BY, "/etc")):
        code, out = await server.scp(ik, "-O", f"{ik}@127.0.0.1:{path}", "x", cwd=tmp_path)
        assert code != 0 and out == "scp: No matches found\n", (path, out)
        assert not (tmp_path / "x").exists()
    (tmp_path / REPORT).write_bytes(pdf_bytes(100_000)[:60_000])
    code, out = await server.scp(MD_NW, "-O", REPORT, f"{MD_NW}@127.0.0.1:/outbox/", cwd=tmp_path)
    assert code != 0 and "scp: abgelehnt: PDF unvollständig" in out, out
    code, out = await server.scp(LV_NW, "-O", REPORT, f"{LV_NW}@127.0.0.1:/inbox/", cwd=tmp_path)
    assert code != 0 and "scp: Read-only folder" in out, out
    code, out = await server.scp(LV_NW, "-O", REPORT, f"{LV_NW}@127.0.0.1:/", cwd=tmp_path)
    assert code != 0 and "scp: No such file" in out, out
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == []
    assert server.temp_files() == []


async def test_truncated_pdf_makes_sftp_fail_and_leaves_a_rejection_protocol(
    server: Server, tmp_path: Path
) -> None:
    (tmp_path / REPORT).write_bytes(pdf_bytes(100_000)[:60_000])
    code, _, err = await server.sftp_batch(MD_NW, f"put {REPORT} /outbox/\n", tmp_path)
    assert code != 0
    # OpenSSH shows the status, not the server's text; the protocol holds the reason.
    assert re.search(r"close remote.*: Failure", err), err
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == []
    code, out, err = await server.sftp_batch(MD_NW, "ls /receipts\nget /receipts/*\n", tmp_path)
    assert code == 0, err
    (protocol,) = [n for n in _listed(out) if n.endswith(".json")]
    assert "_rejected_" in protocol
    body = json.loads((tmp_path / protocol).read_text(encoding="utf-8"))
    assert body["ergebnis"] == "abgelehnt" and body["datei"] == REPORT
    assert body["gruende"] == [
        "PDF unvollständig: Endemarke %%EOF fehlt (abgebrochene Übertragung?)"
    ]
    # Like an accepted upload's, the protocol says what arrived.
    assert body["groesse"] == 60_000
    assert body["sha256"] == _sha(pdf_bytes(100_000)[:60_000])
    assert server.temp_files() == []


async def test_a_killed_sftp_upload_stays_a_partial_file_only_its_depositor_sees_until_reput(
    server: Server, tmp_path: Path
) -> None:
    big = tmp_path / REPORT
    with big.open("wb") as handle:
        handle.write(b"%PDF-1.7\n")
        handle.truncate(64 * 1024 * 1024)  # sparse: quick to make, 64 MiB to send
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n%%EOF\n")
    # 80 Mbit/s: the upload takes seconds, so it is surely killed midway.
    proc = await start_sftp(server, MD_NW, "-l", "80000", cwd=tmp_path)
    assert proc.stdin is not None
    proc.stdin.write(f"put {REPORT} /outbox/\n".encode())
    await proc.stdin.drain()
    # Wait (bounded) until the upload is under way on the server, then kill the client.
    grown = 0
    for _ in range(500):
        files = server.temp_files()
        grown = files[0].stat().st_size if files else 0
        if grown > 1024 * 1024:
            break
        await asyncio.sleep(0.02)
    assert 1024 * 1024 < grown < 64 * 1024 * 1024, "the upload never got under way"
    assert len(server.listener.connections) == 1
    proc.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    # Its ssh child notices the dead parent and closes; the server keeps the bytes.
    for _ in range(500):
        if not server.listener.connections:
            break
        await asyncio.sleep(0.02)
    assert server.listener.connections == {}
    await server.settled()
    (kept,) = server.temp_files()
    size = kept.stat().st_size
    assert size >= grown
    # No document, no protocol, nothing for recipients; the depositor sees the partial.
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == []
    code, out, _ = await server.sftp_batch(MD_NW, "ls /receipts\nls -l /outbox\n", tmp_path)
    assert code == 0 and _listed(out) == [REPORT], out
    (line,) = [x for x in out.splitlines() if x.endswith(REPORT)]
    assert line.startswith("-rw-------") and f" {size} " in line, line
    # reput sends only the rest and completes the upload.
    code, _, err = await server.sftp_batch(MD_NW, f"reput {REPORT} /outbox/{REPORT}\n", tmp_path)
    assert code == 0, err
    assert server.temp_files() == []
    target = tmp_path / "lv"
    target.mkdir()
    code, out, err = await server.sftp_batch(LV_NW, f"get /inbox/{REPORT}\n", target)
    assert code == 0, err
    assert _sha((target / REPORT).read_bytes()) == _sha(big.read_bytes())


async def test_sftp_put_recursive_into_a_recipient_folder_with_a_bigger_buffer(
    server: Server, tmp_path: Path
) -> None:
    # /outbox/<IK>/ addresses one recipient, so a local folder named so uploads to it.
    folder = tmp_path / LV_BY
    folder.mkdir()
    files = {f"{FACILITY_NW}_r{i}.pdf": pdf_bytes(200_000 * i, seed=bytes([i])) for i in (1, 2)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    code, out, err = await server.sftp_batch(
        MD_NW, f"put -R {LV_BY} /outbox\nls -l /outbox/{LV_BY}\n", tmp_path, "-B", "131072"
    )
    assert code == 0, err
    assert sorted(_listed(out)) == sorted(files), out
    target = tmp_path / "abholung"
    target.mkdir()
    code, _, err = await server.sftp_batch(LV_BY, "get /inbox/*\n", target)
    assert code == 0, err
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files


async def test_winscp_style_filepart_rename_and_setstat_keep_the_time(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(150_000, seed=b"winscp")
    (tmp_path / REPORT).write_bytes(data)
    os.utime(tmp_path / REPORT, (1_704_189_600, 1_704_189_600))  # 2024-01-02
    code, out, err = await server.sftp_batch(
        MD_NW,
        # put -p sets the time on the open upload; chmod after the rename is a setstat
        # of the document, as WinSCP sends it.
        f"put -p {REPORT} /outbox/{REPORT}.filepart\n"
        f"rename /outbox/{REPORT}.filepart /outbox/{REPORT}\n"
        f"chmod 644 /outbox/{REPORT}\n"
        "ls -l /outbox\n",
        tmp_path,
    )
    assert code == 0, err
    (line,) = [x for x in out.splitlines() if x.endswith(REPORT) and x.startswith("-")]
    assert line.startswith("-r--------") and f" {len(data)} Jan  2  2024 " in line, line
    code, out, _ = await server.sftp_batch(LV_NW, "ls /inbox\n", tmp_path)
    assert code == 0 and _listed(out) == [REPORT]


async def test_scp_uploads_the_same_file_twice_without_a_second_version(
    server: Server, tmp_path: Path
) -> None:
    (tmp_path / REPORT).write_bytes(pdf_bytes(120_000, seed=b"scp twice"))
    for legacy in ((), ("-O",)):
        code, out = await server.scp(
            MD_NW, *legacy, REPORT, f"{MD_NW}@127.0.0.1:/outbox/", cwd=tmp_path
        )
        assert code == 0, out
    code, out, _ = await server.sftp_batch(MD_NW, "ls /receipts\n", tmp_path)
    assert code == 0
    assert [n.split("_")[2] for n in _listed(out)] == ["accepted", "unchanged"], out


async def test_weekly_bundle_is_collected_checked_and_acknowledged_with_sftp(
    server: Server, tmp_path: Path
) -> None:
    week45 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    async with server.db.session() as session:
        await accounts.update_account(session, ADMIN, week45, LV_NW, bundles=True)
    server.listener.ctx.clock = FixedClock(week45)
    data = pdf_bytes(300_000, seed=b"bundle")
    (tmp_path / REPORT).write_bytes(data)
    code, _, err = await server.sftp_batch(MD_NW, f"put {REPORT} /outbox/\n", tmp_path)
    assert code == 0, err
    ctx = job_context(server.settings, server.db, server.listener.ctx.blobs)
    await run_job(ctx, "bundles", datetime(2026, 11, 9, 1, 0, tzinfo=UTC))
    bundle = f"qpr-{LV_NW}-2026-W45.zip"
    target = tmp_path / "abholung"
    target.mkdir()
    code, out, err = await server.sftp_batch(LV_NW, "ls -l /bundles\nget /bundles/*\n", target)
    assert code == 0, err
    assert _listed(out) == [bundle, f"{bundle}.sha256"], out
    assert sorted(p.name for p in target.iterdir()) == [bundle, f"{bundle}.sha256"]
    zipped = (target / bundle).read_bytes()
    # The checksum file is in sha256sum's format and matches.
    assert (target / f"{bundle}.sha256").read_text() == f"{_sha(zipped)}  {bundle}\n"
    with zipfile.ZipFile(target / bundle) as archive:
        assert archive.read(REPORT) == data
    code, _, err = await server.sftp_batch(LV_NW, f"rm /bundles/{bundle}\n", tmp_path)
    assert code == 0, err
    code, out, err = await server.sftp_batch(LV_NW, "ls /bundles\n", tmp_path)
    assert code == 0 and _listed(out) == [], (out, err)


async def test_links_folders_and_modes_are_refused_to_openssh_with_clear_errors(
    server: Server, tmp_path: Path
) -> None:
    (tmp_path / REPORT).write_bytes(pdf_bytes())
    code, _, err = await server.sftp_batch(MD_NW, f"put {REPORT} /outbox/\n", tmp_path)
    assert code == 0, err
    # A leading "-" lets the batch go on after a failed command.
    code, out, err = await server.sftp_batch(
        LV_NW,
        f"-ln -s /inbox/{REPORT} /inbox/link.pdf\n"
        f"-ln /inbox/{REPORT} /inbox/hard.pdf\n"
        "-ln -s /etc/passwd /inbox/passwd\n"
        "-mkdir /inbox/neu\n"
        "-rmdir /inbox\n"
        f"-chmod 777 /inbox/{REPORT}\n"
        f"-rename /inbox/{REPORT} /archive/{REPORT}\n"
        "df /inbox\n"
        "ls /inbox\n",
        tmp_path,
    )
    assert code == 0, err
    refusals = [line for line in err.splitlines() if line.endswith(": Permission denied")]
    for pattern in (
        r"symlink.*/inbox/link\.pdf",
        r"link.*/inbox/hard\.pdf",
        r"symlink.*/etc/passwd",
        r"mkdir.*/inbox/neu",
        r"rmdir.*/inbox",
        r"setstat.*/inbox/",
        r"rename.*/archive/",
    ):
        assert sum(bool(re.search(pattern, line)) for line in refusals) >= 1, (pattern, err)
    assert len(refusals) == 7, err
    lines = out.splitlines()
    # df answers from statvfs@openssh.com: a header line and a line of numbers.
    df = lines[lines.index("sftp> df /inbox") + 2]
    assert re.fullmatch(r"\s*\d+\s+\d+\s+\d+\s+\d+\s+\d+%", df), df
    assert _listed(out) == [REPORT]  # no link appeared
    # Without "-" the first refusal ends the batch with a non-zero exit.
    code, _, err = await server.sftp_batch(
        LV_NW, f"ln -s /inbox/{REPORT} /inbox/link.pdf\n", tmp_path
    )
    assert code != 0
