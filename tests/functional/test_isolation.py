"""No account can reach anything of another, by any path; hostile paths fail cleanly."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from tests.functional.harness import FACILITY_NW, LV_BY, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_geheim.pdf"
ARCHIVED = f"{FACILITY_NW}_alt.pdf"
SECRET = pdf_bytes(seed=b"secret")
OLD = pdf_bytes(seed=b"old")
MD_BY = "190900021"  # a second inspection body, in Bayern
DENIED = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)
DENIED_NAMES = {e.__name__ for e in DENIED}
# The only texts the server may send with an error; never a traceback or internals.
ALLOWED_MESSAGES = {
    "No such file",
    "Not a directory",
    "Permission denied",
    "Read-only folder",
    "Rename not allowed here",
    "Links are not allowed",
    "Is a directory",
    "Not a link",
    "Not open for reading",
    "Not open for writing",
}


def _clean(reason: str) -> bool:
    # Refused uploads and names explain themselves in German ("abgelehnt: <Grund>",
    # "Dateiname enthält das Steuerzeichen U+001B an Stelle 1").
    return reason in ALLOWED_MESSAGES or reason.startswith(("abgelehnt: ", "Dateiname enthält "))


async def _put(server: Server, ik: str, path: str, data: bytes) -> None:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "wb") as f,
    ):
        await f.write(data)


async def _read(sftp: Any, path: Any) -> bytes:
    async with sftp.open(path, "rb") as f:
        return bytes(await f.read())


async def _write(sftp: Any, path: Any) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(b"x")


async def _names(sftp: Any, path: Any) -> list[Any]:
    return [n for n in await sftp.listdir(path) if n not in (".", "..", b".", b"..")]


async def _realpath_then_read(sftp: Any, path: Any) -> bytes:
    return await _read(sftp, await sftp.realpath(path))


Op = Callable[[Any, Any], Awaitable[Any]]

OPERATIONS: dict[str, Op] = {
    "stat": lambda s, p: s.stat(p),
    "lstat": lambda s, p: s.lstat(p),
    "read": _read,
    "write": _write,
    "listdir": _names,
    "remove": lambda s, p: s.remove(p),
    "rename": lambda s, p: s.rename(p, "/x"),
    "rename-onto": lambda s, p: s.rename("/outbox/none.filepart", p),
    "posix-rename": lambda s, p: s.posix_rename(p, "/x"),
    "setstat": lambda s, p: s.chmod(p, 0o777),
    "lsetstat": lambda s, p: s.chmod(p, 0o777, follow_symlinks=False),
    "truncate": lambda s, p: s.truncate(p, 0),
    "mkdir": lambda s, p: s.mkdir(p),
    "rmdir": lambda s, p: s.rmdir(p),
    "readlink": lambda s, p: s.readlink(p),
    "symlink-to": lambda s, p: s.symlink(p, "/inbox/link"),
    "symlink-at": lambda s, p: s.symlink("/etc/passwd", p),
    "link": lambda s, p: s.link(p, "/inbox/hardlink"),
    "statvfs": lambda s, p: s.statvfs(p),
    "realpath-then-read": _realpath_then_read,
}


def _spellings(owner: str, folder: str, name: str) -> list[str]:
    return [
        f"/{folder}/{name}",
        f"{folder}/{name}",
        f"/../{folder}/{name}",
        f"//{folder}//{name}",
        f"/{folder}/./{name}",
        f"/{folder}/../{folder}/{name}",
        f"/{owner}/{folder}/{name}",
        f"../{owner}/{folder}/{name}",
        f"/home/{owner}/{folder}/{name}",
    ]


async def _outcome(sftp: Any, op: Op, path: Any) -> tuple[str, str]:
    """What an operation did: ("ok", result) or (error class, reason)."""
    try:
        result = await op(sftp, path)
    except asyncssh.SFTPError as exc:
        return type(exc).__name__, exc.reason
    return "ok", repr(result)


async def _walk(sftp: Any) -> list[str]:
    """Every name in an account's tree, folders included."""
    found: list[str] = []
    for folder in await _names(sftp, "/"):
        found.append(folder)
        for name in await _names(sftp, f"/{folder}"):
            found.append(f"{folder}/{name}")
    return found


@pytest.fixture
async def owned(server: Server) -> dict[str, list[tuple[str, str]]]:
    """What each owner has: LV NW a delivery in /inbox and one in /archive, MD NW protocols."""
    await server.add_account(MD_BY, ["depositor"], name="Medizinischer Dienst BY")
    await _put(server, MD_NW, f"/outbox/{REPORT}", SECRET)
    await _put(server, MD_NW, f"/outbox/{ARCHIVED}", OLD)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        await sftp.remove(f"/inbox/{ARCHIVED}")
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        protocols = await _names(sftp, "/receipts")
    assert len(protocols) == 2
    return {
        LV_NW: [("inbox", REPORT), ("archive", ARCHIVED)],
        MD_NW: [("receipts", p) for p in protocols],
    }


async def _owner_still_has_everything(server: Server, owned: dict[str, Any]) -> None:
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert await _names(sftp, "/inbox") == [REPORT]
        assert await _names(sftp, "/archive") == [ARCHIVED]
        assert await _read(sftp, f"/inbox/{REPORT}") == SECRET
        assert await _read(sftp, f"/archive/{ARCHIVED}") == OLD
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        accepted = [n for n in await _names(sftp, "/receipts") if "_rejected_" not in n]
        assert sorted(accepted) == sorted(n for _, n in owned[MD_NW])


@pytest.mark.parametrize(
    ("owner", "intruder"),
    [
        (LV_NW, LV_BY),  # recipient against recipient
        (LV_NW, MD_BY),  # depositor against recipient
        (LV_NW, MD_NW),  # the sender against the recipient's mailbox
        (MD_NW, MD_BY),  # depositor against depositor
        (MD_NW, LV_BY),  # recipient against depositor
        (MD_NW, LV_NW),  # the recipient against the sender's protocols
    ],
)
async def test_no_operation_in_any_spelling_reaches_another_accounts_files(
    server: Server, owned: dict[str, list[tuple[str, str]]], owner: str, intruder: str
) -> None:
    async with server.connect(intruder) as conn, conn.start_sftp_client() as sftp:
        for folder, name in owned[owner]:
            decoy = "nie-geliefert.pdf"
            for path, unknown in zip(
                _spellings(owner, folder, name), _spellings(owner, folder, decoy), strict=True
            ):
                for op_name, op in OPERATIONS.items():
                    outcome = await _outcome(sftp, op, path)
                    kind, reason = outcome
                    assert kind in DENIED_NAMES, (op_name, path, intruder, outcome)
                    assert _clean(reason), (op_name, path, reason)
                    # The same answer as for a name that never existed: no oracle.
                    assert outcome == await _outcome(sftp, op, unknown), (op_name, path)
        # The sender's /outbox lists the documents it sent: its own, not the recipient's.
        walk = [w for w in await _walk(sftp) if not (intruder == MD_NW and w.startswith("outbox/"))]
        assert not {name for _, name in owned[owner]} & {w.rsplit("/", 1)[-1] for w in walk}
    await _owner_still_has_everything(server, owned)


async def test_the_owner_reaches_its_files_in_every_plain_spelling(
    server: Server, owned: dict[str, list[tuple[str, str]]]
) -> None:
    # The control for the test above: the spellings do name the files for their owner.
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        for path in _spellings(LV_NW, "inbox", REPORT)[:6]:
            assert (await sftp.stat(path)).size == len(SECRET), path
            assert await _read(sftp, path) == SECRET, path
            assert await _realpath_then_read(sftp, path) == SECRET, path
        for path in _spellings(LV_NW, "inbox", REPORT)[6:]:
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.stat(path)  # no account has a home-folder spelling


async def test_a_pending_upload_is_invisible_to_other_accounts_and_stays_its_owners(
    server: Server, owned: dict[str, list[tuple[str, str]]]
) -> None:
    temp = f"/outbox/{REPORT}.filepart"
    fresh = pdf_bytes(seed=b"new version")
    async with server.connect(MD_NW) as owner_conn, owner_conn.start_sftp_client() as mine:
        async with mine.open(temp, "wb") as f:
            await f.write(fresh)
        # The upload in progress, then the owner's documents sent before.
        assert await _names(mine, "/outbox") == [f"{REPORT}.filepart", REPORT, ARCHIVED]
        async with server.connect(MD_BY) as conn, conn.start_sftp_client() as other:
            for op_name in ("stat", "lstat", "read", "remove", "rename", "readlink", "statvfs"):
                kind, reason = await _outcome(other, OPERATIONS[op_name], temp)
                assert kind in DENIED_NAMES, (op_name, kind, reason)
            assert await _names(other, "/outbox") == []
            # The same name in the other account's outbox is that account's own upload.
            async with other.open(temp, "wb") as f:
                await f.write(b"%PDF-1.7\nintruder\n%%EOF\n")
            assert await _names(other, "/outbox") == [f"{REPORT}.filepart"]
        await mine.rename(temp, f"/outbox/{REPORT}")
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert await _read(sftp, f"/inbox/{REPORT}") == fresh
    async with server.connect(MD_BY) as conn, conn.start_sftp_client() as sftp:
        assert await _names(sftp, "/receipts") == []  # its temp upload left with its session
    assert server.temp_files() == []


async def test_recipients_cannot_upload_and_read_only_places_refuse_writes(
    server: Server, owned: dict[str, list[tuple[str, str]]]
) -> None:
    refused = {
        LV_NW: [
            "/outbox/x.pdf",
            f"/outbox/{LV_BY}/x.pdf",
            "/inbox/x.pdf",
            f"/inbox/{REPORT}",
            "/archive/x.pdf",
            f"/archive/{ARCHIVED}",
            "/bundles/x.zip",
            "/x.pdf",
            "/",
            "/inbox",
        ],
        MD_NW: [
            "/receipts/x.json",
            f"/receipts/{owned[MD_NW][0][1]}",
            "/x.pdf",
            "/",
            "/inbox/x.pdf",
            "/outbox",
            f"/outbox/{LV_NW}",
        ],
    }
    for ik, paths in refused.items():
        async with server.connect(ik) as conn, conn.start_sftp_client() as sftp:
            for path in paths:
                with pytest.raises((*DENIED, asyncssh.SFTPFailure)) as info:
                    await _write(sftp, path)
                assert _clean(info.value.reason), (path, info.value.reason)
            for folder in ("/", "/inbox", "/archive", "/bundles", "/outbox", "/receipts"):
                with pytest.raises(DENIED):
                    await sftp.mkdir(f"{folder.rstrip('/')}/neu")
    assert server.temp_files() == []
    await _owner_still_has_everything(server, owned)


async def test_symlinks_and_hard_links_are_refused_everywhere(
    server: Server, owned: dict[str, list[tuple[str, str]]]
) -> None:
    attempts = {
        LV_NW: [
            (f"/inbox/{REPORT}", "/inbox/link.pdf"),
            (f"/inbox/{REPORT}", "/archive/link.pdf"),
            ("/etc/passwd", "/inbox/passwd"),
            ("../../../etc/passwd", "/inbox/passwd"),
        ],
        MD_NW: [
            ("/etc/passwd", "/outbox/passwd.pdf"),
            (f"/receipts/{owned[MD_NW][0][1]}", "/outbox/protokoll.json"),
            (f"/outbox/{REPORT}", f"/outbox/{LV_BY}/{REPORT}"),
        ],
    }
    for ik, pairs in attempts.items():
        async with server.connect(ik) as conn, conn.start_sftp_client() as sftp:
            before = await _walk(sftp)
            for target, link in pairs:
                for make in (sftp.symlink, sftp.link):
                    with pytest.raises(asyncssh.SFTPPermissionDenied, match="Links are not"):
                        await make(target, link)
            assert await _walk(sftp) == before
    assert server.temp_files() == []


HOSTILE: list[bytes] = [
    b"/../../../../etc/passwd",
    b"../../../etc/passwd",
    b"/inbox/../../etc/shadow",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/inbox/%2e%2e%2f" + FACILITY_NW.encode(),
    b"/inbox/..%2f..%2fetc%2fpasswd",
    b"/inbox/\x00/etc/passwd",
    b"/inbox\x00",
    b"/inbox/" + REPORT.encode() + b"\x00.txt",
    b"\x00",
    b"/\xff\xfe/inbox",
    b"/inbox/\xff\xfe.pdf",
    b"/inbox/\xc0\xae\xc0\xae",
    b"/inbox/" + b"a" * 300,
    b"/outbox/" + b"a" * 300 + b".pdf",
    b"/" + b"x/" * 2600,
    b"/inbox/" + b"a" * 4990,
    "/іnbox".encode(),  # Cyrillic і
    "/іnbox/".encode() + REPORT.encode(),
    "／inbox".encode(),  # fullwidth solidus
    "／inbox／".encode() + REPORT.encode(),
    "/ｏutbox/x.pdf".encode(),  # fullwidth o
    "/inbox\u202e/fdp.exe".encode(),
    "/inbox/\u200b".encode(),  # zero-width space
    b"/inbox/\x1b[31m",
    b"/inbox/\n",
    b"/inbox/\r\n" + REPORT.encode(),
    b"/inbox/\x7f",
    b"/outbox/\x1b]0;x\x07.pdf",
    b"/inbox/",
    b"/inbox//",
    b"/inbox/" + REPORT.encode() + b"/",
    b"/inbox/" + REPORT.encode() + b"/.",
    b"/inbox/" + REPORT.encode() + b"/..",
    b"/outbox/x.pdf/",
    b"/outbox/",
    b"/outbox/../../etc/passwd",
    b"/outbox/123456789/x.pdf",
    b"/outbox/" + b"9" * 9 + b"/../../etc",
    b"/outbox/" + LV_NW.encode() + b"/x/y.pdf",
    b"/receipts/../../outbox/x.pdf",
    b"\\inbox\\" + REPORT.encode(),
    b"C:\\inbox",
    b"~/inbox",
    b"~root/.ssh/authorized_keys",
    b"/proc/self/environ",
    b"/dev/zero",
]
# Only these may succeed on a hostile path; all of them stay inside the own tree.
HARMLESS = {
    "listdir",  # e.g. "/inbox/" lists the own inbox
    "stat",
    "lstat",
    "statvfs",
    "realpath-then-read",  # reads the own file at a normalised path
    "setstat",  # accepted and ignored in /outbox
    "lsetstat",
    "truncate",
    "mkdir",  # /outbox/<IK> exists implicitly
}


@pytest.mark.parametrize("ik", [LV_NW, MD_NW])
async def test_hostile_paths_fail_cleanly_for_every_operation(
    server: Server,
    owned: dict[str, list[tuple[str, str]]],
    ik: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with server.connect(ik) as conn, conn.start_sftp_client() as sftp:
        before = await _walk(sftp)
        for raw in HOSTILE:
            for name, op in OPERATIONS.items():
                kind, reason = await _outcome(sftp, op, raw)
                if kind != "ok":
                    assert _clean(reason), (name, raw, reason)
                    continue
                assert name in HARMLESS, (name, raw)
                if name == "realpath-then-read":
                    assert reason == repr(SECRET), (name, raw)
        # The server keeps serving on the same session, and nothing changed but the
        # protocols of the depositor's refused uploads.
        after = await _walk(sftp)
        assert [w for w in after if "_rejected_" not in w] == before
        assert all(w.startswith("receipts/") for w in after if w not in before)
        assert len(server.listener.connections) == 1
    await _owner_still_has_everything(server, owned)
    assert server.temp_files() == []
    leaked = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert leaked == []


async def test_realpath_never_leaves_the_account_root(server: Server) -> None:
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        for raw in (b".", b"..", b"../../..", b"/../..", b"//", b"inbox/../../x", b"~"):
            real = await sftp.realpath(raw)
            assert real.startswith(b"/") and b".." not in real.split(b"/"), (raw, real)
        assert await sftp.realpath(b"../../inbox/./x/..") == b"/inbox"
        for raw in (b"\x00", b"/\xff", b"/" + b"x" * 5000):
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.realpath(raw)


async def test_requests_beyond_open_read_and_write_answer_cleanly(
    server: Server, owned: dict[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    big = pdf_bytes(5 * 1024 * 1024, seed=b"big")
    await _put(server, MD_NW, f"/outbox/{LV_BY}/gross.pdf", big)
    async with server.connect(LV_BY) as conn, conn.start_sftp_client() as sftp:
        # asyncssh's get asks for data ranges (a sparse-file extension) first.
        await sftp.get("/inbox/gross.pdf", tmp_path / "gross.pdf")
        assert (tmp_path / "gross.pdf").read_bytes() == big
        async with sftp.open("/inbox/gross.pdf", "rb", block_size=0) as f:
            assert [r async for r in f.request_ranges(0, len(big))] == [(0, len(big))]
            await f.fsync()
            # One huge read is answered short, never with more than a client takes.
            first = await f.read(2**32 - 1, 0)
            assert 0 < len(first) <= 4 * 1024 * 1024 and big.startswith(first)
            assert await f.read(1000, 2**63) == b""
            assert await f.read(1000, len(big)) == b""
            assert (await f.stat()).size == len(big)
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await f.chmod(0o777)
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await f.write(b"x", 0)
        assert (await sftp.statvfs("/inbox")).namemax == 255
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.statvfs("/inbox/nie-geliefert.pdf")
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        protocol = f"/receipts/{owned[MD_NW][0][1]}"
        await sftp.get(protocol, tmp_path / "protokoll.json")
        assert b'"ergebnis": "angenommen"' in (tmp_path / "protokoll.json").read_bytes()
        async with sftp.open("/outbox/fsync.pdf.part", "wb") as f:
            await f.write(pdf_bytes(seed=b"fsync"))
            await f.fsync()
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                [r async for r in f.request_ranges(0, 10)]
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await f.read(10, 0)
        await sftp.rename("/outbox/fsync.pdf.part", f"/outbox/{LV_BY}/fsync.pdf")
    async with server.connect(LV_BY) as conn, conn.start_sftp_client() as sftp:
        assert sorted(await _names(sftp, "/inbox")) == ["fsync.pdf", "gross.pdf"]


def _packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


async def _reply(reader: Any) -> tuple[int, bytes]:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    body = await reader.readexactly(length)
    return body[0], body[1:]


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">I", 0x7FFFFFFF) + b"x",  # longer than any SFTP packet may be
        _packet(6),  # a write without request id: undecodable
    ],
)
async def test_a_malformed_packet_midway_through_an_upload_leaves_only_a_partial_file(
    server: Server, garbage: bytes
) -> None:
    name = f"/outbox/{REPORT}".encode()
    async with server.connect(MD_NW) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        writer.write(_packet(1, struct.pack(">I", 3)))  # INIT, version 3
        assert (await _reply(reader))[0] == 2  # VERSION
        open_flags = struct.pack(">II", 0x02 | 0x08 | 0x10, 0)  # WRITE|CREAT|TRUNC, no attrs
        writer.write(_packet(3, struct.pack(">I", 1), _string(name), open_flags))
        kind, body = await _reply(reader)
        assert kind == 102  # HANDLE
        handle = body[4:]  # request id, then the handle as an SFTP string
        # The whole document arrives, but the client never closes it.
        write = (struct.pack(">I", 2), handle, struct.pack(">Q", 0), _string(SECRET))
        writer.write(_packet(6, *write))
        kind, body = await _reply(reader)
        assert kind == 101 and struct.unpack(">I", body[4:8])[0] == 0  # STATUS OK
        writer.write(garbage)
        # asyncssh ends the session on the bad packet and closes the handle itself:
        # no client's "done", so no document, only a partial file for the depositor.
        assert await asyncio.wait_for(reader.read(), 10) == b""
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        for _ in range(250):  # the old session's clean-up may still be recording it
            if await _names(sftp, "/outbox"):
                break
            await asyncio.sleep(0.02)
        assert await _names(sftp, "/outbox") == [REPORT]
        assert (await sftp.stat(f"/outbox/{REPORT}")).size == len(SECRET)
        assert await _names(sftp, "/receipts") == []
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert await _names(sftp, "/inbox") == []
    assert len(server.temp_files()) == 1


async def test_a_temp_upload_renamed_onto_another_replaces_it_without_leftovers(
    server: Server,
) -> None:
    first, second = pdf_bytes(seed=b"first"), pdf_bytes(seed=b"second")
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        for name, data in (("a.pdf.filepart", first), ("b.pdf.filepart", second)):
            async with sftp.open(f"/outbox/{name}", "wb") as f:
                await f.write(data)
        assert len(server.temp_files()) == 2
        await sftp.rename("/outbox/a.pdf.filepart", "/outbox/b.pdf.filepart")
        assert await _names(sftp, "/outbox") == ["b.pdf.filepart"]
        assert len(server.temp_files()) == 1
        await sftp.rename("/outbox/b.pdf.filepart", f"/outbox/{LV_BY}/b.pdf")
    assert server.temp_files() == []
    async with server.connect(LV_BY) as conn, conn.start_sftp_client() as sftp:
        assert await _read(sftp, "/inbox/b.pdf") == first


async def test_ending_one_sftp_session_keeps_another_sessions_temp_upload(
    server: Server,
) -> None:
    data = pdf_bytes(seed=b"two sessions")
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as first:
        async with first.open("/outbox/x.pdf.part", "wb") as f:
            await f.write(data)
        async with conn.start_sftp_client() as second:
            async with second.open("/outbox/y.pdf.part", "wb") as f:
                await f.write(data)
            assert sorted(await _names(second, "/outbox")) == ["x.pdf.part", "y.pdf.part"]
        # The second session's end took its own temp upload, not the first one's.
        assert await _names(first, "/outbox") == ["x.pdf.part"]
        await first.rename("/outbox/x.pdf.part", f"/outbox/{LV_BY}/x.pdf")
    assert server.temp_files() == []
    async with server.connect(LV_BY) as conn, conn.start_sftp_client() as sftp:
        assert await _read(sftp, "/inbox/x.pdf") == data
