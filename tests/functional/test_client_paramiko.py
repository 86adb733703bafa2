"""paramiko's SFTP client with its defaults: put (confirm=True), get, listings, renames."""

from __future__ import annotations

import asyncio
import json
import stat
import unicodedata
from pathlib import Path

import paramiko
import pytest
from sqlalchemy import func, select

from qprserver.db.models import Delivery, Document
from tests.functional.harness import FACILITY_NW, LV_NW, MD_NW, Server, paramiko_sftp, pdf_bytes

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


def _in_thread(func, *args):  # type: ignore[no-untyped-def]
    # paramiko blocks; the server runs on this test's event loop.
    return asyncio.to_thread(func, *args)


def _protocols(sftp: paramiko.SFTPClient) -> list[dict[str, object]]:
    result = []
    for name in sorted(sftp.listdir("/receipts")):
        with sftp.open(f"/receipts/{name}") as f:
            result.append(json.loads(f.read()))
    return result


async def test_paramiko_put_with_confirm_get_and_listdir_attr(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(333_333, seed=b"paramiko")
    (tmp_path / REPORT).write_bytes(data)

    def deposit() -> tuple[int, list[paramiko.SFTPAttributes]]:
        with paramiko_sftp(server, MD_NW) as sftp:
            # confirm=True (the default) stats the name after the upload.
            attrs = sftp.put(str(tmp_path / REPORT), f"/outbox/{REPORT}")
            return attrs.st_size or 0, sftp.listdir_attr("/outbox")

    size, listed = await _in_thread(deposit)
    assert size == len(data)
    assert [(a.filename, a.st_size) for a in listed] == [(REPORT, len(data))]
    assert listed[0].st_mode is not None and stat.S_IMODE(listed[0].st_mode) == 0o400

    def collect() -> list[paramiko.SFTPAttributes]:
        with paramiko_sftp(server, LV_NW) as sftp:
            sftp.get(f"/inbox/{REPORT}", str(tmp_path / "copy.pdf"))
            return sftp.listdir_attr("/inbox")

    listed = await _in_thread(collect)
    assert [(a.filename, a.st_size) for a in listed] == [(REPORT, len(data))]
    assert (tmp_path / "copy.pdf").read_bytes() == data


async def test_paramiko_put_twice_with_the_same_bytes_makes_one_version(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(100_000, seed=b"retry")
    (tmp_path / REPORT).write_bytes(data)

    def deposit_twice() -> list[dict[str, object]]:
        with paramiko_sftp(server, MD_NW) as sftp:
            sftp.put(str(tmp_path / REPORT), f"/outbox/{REPORT}")
            sftp.put(str(tmp_path / REPORT), f"/outbox/{REPORT}")  # a script's retry
            return _protocols(sftp)

    first, second = await _in_thread(deposit_twice)
    assert first["ergebnis"] == "angenommen" and first["version"] == 1
    assert second["ergebnis"] == "unverändert"
    assert second["version"] == 1 and second["sha256"] == first["sha256"]
    async with server.db.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 1
        # One delivery each for LV NW and the facility: the retry notifies no one again.
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 2


async def test_paramiko_rename_and_posix_rename_from_temp_names_complete_uploads(
    server: Server, tmp_path: Path
) -> None:
    first = pdf_bytes(50_000, seed=b"rename")
    second = pdf_bytes(60_000, seed=b"posix-rename")
    other = f"{FACILITY_NW}_zweiter.pdf"

    def deposit() -> list[str]:
        with paramiko_sftp(server, MD_NW) as sftp:
            with sftp.open(f"/outbox/{REPORT}.filepart", "wb") as f:
                f.write(first)
            sftp.rename(f"/outbox/{REPORT}.filepart", f"/outbox/{REPORT}")
            with sftp.open(f"/outbox/.{other}.Ab12Cd", "wb") as f:  # rsync's temp name
                f.write(second)
            sftp.posix_rename(f"/outbox/.{other}.Ab12Cd", f"/outbox/{other}")
            assert sftp.stat(f"/outbox/{other}").st_size == len(second)
            return sorted(sftp.listdir("/outbox"))

    assert await _in_thread(deposit) == sorted([REPORT, other])

    def collect() -> dict[str, bytes]:
        with paramiko_sftp(server, LV_NW) as sftp:
            return {n: sftp.open(f"/inbox/{n}").read() for n in sftp.listdir("/inbox")}

    assert await _in_thread(collect) == {REPORT: first, other: second}


async def test_paramiko_setstat_times_on_an_upload_and_on_the_document_are_kept(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(40_000, seed=b"utime")

    def deposit() -> tuple[int | None, int | None, int | None]:
        with paramiko_sftp(server, MD_NW) as sftp:
            with sftp.open(f"/outbox/{REPORT}.filepart", "wb") as f:
                f.write(data)
                f.utime((1_600_000_000, 1_600_000_000))  # fsetstat on the open upload
                during = f.stat().st_mtime
            sftp.utime(f"/outbox/{REPORT}.filepart", (1_650_000_000, 1_650_000_000))
            sftp.rename(f"/outbox/{REPORT}.filepart", f"/outbox/{REPORT}")
            after_rename = sftp.stat(f"/outbox/{REPORT}").st_mtime
            # WinSCP sets the time after the rename, on the document.
            sftp.utime(f"/outbox/{REPORT}", (1_700_000_000, 1_700_000_000))
            sftp.chmod(f"/outbox/{REPORT}", 0o644)  # accepted, means nothing here
            return during, after_rename, sftp.stat(f"/outbox/{REPORT}").st_mtime

    assert await _in_thread(deposit) == (1_600_000_000, 1_650_000_000, 1_700_000_000)


async def test_nfd_and_nfc_spellings_name_the_same_document(server: Server, tmp_path: Path) -> None:
    nfc = f"{FACILITY_NW}_Prüfbericht_Müller.pdf"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc

    def deposit() -> tuple[list[str], list[dict[str, object]]]:
        with paramiko_sftp(server, MD_NW) as sftp:
            with sftp.open(f"/outbox/{nfd}", "wb") as f:
                f.write(pdf_bytes(seed=b"v1"))
            with sftp.open(f"/outbox/{nfc}", "wb") as f:
                f.write(pdf_bytes(seed=b"v2"))
            return sftp.listdir("/outbox"), _protocols(sftp)

    listed, protocols = await _in_thread(deposit)
    assert listed == [nfc]
    assert [(p["datei"], p["version"]) for p in protocols] == [(nfc, 1), (nfc, 2)]

    def collect() -> tuple[list[str], bytes]:
        with paramiko_sftp(server, LV_NW) as sftp, sftp.open(f"/inbox/{nfd}") as f:  # any spelling
            return sftp.listdir("/inbox"), f.read()

    names, body = await _in_thread(collect)
    assert names == [nfc] and body == pdf_bytes(seed=b"v2")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            f"{FACILITY_NW}_Bericht\u202eFDP.exe.pdf",
            "Dateiname enthält das Schreibrichtungszeichen U+202E (RIGHT-TO-LEFT OVERRIDE)"
            " an Stelle 18; es verfälscht die angezeigte Reihenfolge der Zeichen",
        ),
        (
            f"{FACILITY_NW}_\u2066Bericht.pdf",
            "Dateiname enthält das Schreibrichtungszeichen U+2066 (LEFT-TO-RIGHT ISOLATE)"
            " an Stelle 11; es verfälscht die angezeigte Reihenfolge der Zeichen",
        ),
        (
            f"{FACILITY_NW}_Be\u200bricht.pdf",
            "Dateiname enthält das unsichtbare Zeichen U+200B (ZERO WIDTH SPACE) an Stelle 13",
        ),
        (
            f"\ufeff{FACILITY_NW}_Bericht.pdf",
            "Dateiname enthält das unsichtbare Zeichen U+FEFF (ZERO WIDTH NO-BREAK SPACE)"
            " an Stelle 1",
        ),
        (
            f"{FACILITY_NW}_Bericht\x85.pdf",
            "Dateiname enthält das Steuerzeichen U+0085 an Stelle 18",
        ),
        (
            f"{FACILITY_NW}_Bericht\x7f.pdf",
            "Dateiname enthält das Steuerzeichen U+007F an Stelle 18",
        ),
    ],
)
async def test_hostile_file_names_are_refused_with_a_reason_and_change_nothing(
    server: Server, name: str, reason: str
) -> None:
    def attempt() -> list[str]:
        errors: list[str] = []
        with paramiko_sftp(server, MD_NW) as sftp:
            with pytest.raises(OSError) as caught:
                sftp.open(f"/outbox/{name}", "wb")
            errors.append(str(caught.value))
            with sftp.open(f"/outbox/{REPORT}.part", "wb") as f:
                f.write(pdf_bytes(seed=b"rename"))
            with pytest.raises(OSError) as caught:
                sftp.rename(f"/outbox/{REPORT}.part", f"/outbox/{name}")
            errors.append(str(caught.value))
            assert sftp.listdir("/outbox") == [f"{REPORT}.part"]  # still there, unchanged
            assert sftp.listdir("/receipts") == []
        return errors

    assert await _in_thread(attempt) == [reason, reason]
