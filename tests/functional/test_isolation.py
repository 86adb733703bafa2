"""No account can reach anything of another, by any path; hostile paths fail cleanly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest

from tests.functional.harness import FACILITY_NW, LV_BY, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_geheim.pdf"
DENIED = (asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied, asyncssh.SFTPFailure)
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


async def _deliver(server: Server) -> None:
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(pdf_bytes(seed=b"secret"))


def _spellings(owner: str, folder: str, name: str) -> list[str]:
    return [
        f"/{folder}/{name}",
        f"{folder}/{name}",
        f"/../{folder}/{name}",
        f"//{folder}//{name}",
        f"/{folder}/./{name}",
        f"/{owner}/{folder}/{name}",
        f"../{owner}/{folder}/{name}",
        f"/home/{owner}/{folder}/{name}",
    ]


Op = Callable[[Any, str], Awaitable[Any]]


async def _read(sftp: Any, path: str) -> bytes:
    async with sftp.open(path, "rb") as f:
        return bytes(await f.read())


async def _write(sftp: Any, path: str) -> None:
    async with sftp.open(path, "wb") as f:
        await f.write(b"x")


async def _listdir(sftp: Any, path: str) -> list[str]:
    return [n for n in await sftp.listdir(path) if n not in (".", "..")]


OPERATIONS: dict[str, Op] = {
    "stat": lambda s, p: s.stat(p),
    "lstat": lambda s, p: s.lstat(p),
    "read": _read,
    "write": _write,
    "listdir": _listdir,
    "remove": lambda s, p: s.remove(p),
    "rename": lambda s, p: s.rename(p, "/x"),
    "setstat": lambda s, p: s.chmod(p, 0o777),
    "mkdir": lambda s, p: s.mkdir(p),
    "rmdir": lambda s, p: s.rmdir(p),
    "readlink": lambda s, p: s.readlink(p),
    "symlink": lambda s, p: s.symlink(p, "/inbox/link"),
    "link": lambda s, p: s.link(p, "/inbox/hardlink"),
}


@pytest.mark.parametrize("intruder", [LV_BY, MD_NW])
async def test_another_account_can_reach_nothing_of_a_delivery(
    server: Server, intruder: str
) -> None:
    await _deliver(server)
    paths = _spellings(LV_NW, "inbox", REPORT) + _spellings(LV_NW, "archive", REPORT)
    async with server.connect(intruder) as conn, conn.start_sftp_client() as sftp:
        for path in paths:
            for name, op in OPERATIONS.items():
                if name == "listdir":
                    path = path.rsplit("/", 1)[0] or "/"
                try:
                    result = await op(sftp, path)
                except DENIED:
                    continue
                # Listing one's own (empty or foreign-free) folder may succeed.
                assert name == "listdir", f"{name} {path} succeeded for {intruder}"
                assert REPORT not in result
        # Nothing of the recipient ever shows anywhere in the intruder's tree.
        for folder in await _listdir(sftp, "/"):
            assert REPORT not in await _listdir(sftp, f"/{folder}")


async def test_the_recipient_itself_can_read_it(server: Server) -> None:
    await _deliver(server)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert await _read(sftp, f"/inbox/{REPORT}") == pdf_bytes(seed=b"secret")
        assert await _read(sftp, f"//inbox/../inbox/{REPORT}") == pdf_bytes(seed=b"secret")


async def test_recipients_cannot_upload_and_read_only_folders_refuse_writes(
    server: Server,
) -> None:
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        for path in ("/outbox/x.pdf", "/inbox/x.pdf", "/archive/x.pdf", "/bundles/x.zip", "/x"):
            with pytest.raises(DENIED):
                await _write(sftp, path)
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        for path in ("/receipts/x.json", "/x.pdf", "/inbox/x.pdf"):
            with pytest.raises(DENIED):
                await _write(sftp, path)


HOSTILE: list[bytes] = [
    b"/../../../../etc/passwd",
    b"../../../etc/passwd",
    b"/inbox/../../etc/shadow",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/inbox/%2e%2e%2f" + FACILITY_NW.encode(),
    b"/inbox/\x00/etc/passwd",
    b"/inbox\x00",
    b"/\xff\xfe/inbox",
    b"/inbox/\xc0\xae\xc0\xae",
    b"/inbox/" + b"a" * 300,
    b"/" + b"x/" * 2600,
    "/іnbox".encode(),  # Cyrillic і
    "／inbox".encode(),  # fullwidth solidus
    "/inbox\u202e/fdp.exe".encode(),
    b"/inbox/\x1b[31m",
    b"/inbox/\n",
    b"/inbox/",
    b"/outbox/../../etc/passwd",
    b"/outbox/123456789/x.pdf",
    b"/outbox/" + b"9" * 9 + b"/../../etc",
]


async def test_hostile_paths_fail_cleanly_for_every_operation(server: Server) -> None:
    await _deliver(server)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        for raw in HOSTILE:
            for name, op in OPERATIONS.items():
                try:
                    result = await op(sftp, raw)  # type: ignore[arg-type]
                except asyncssh.SFTPError as exc:
                    assert exc.reason in ALLOWED_MESSAGES, (name, raw, exc.reason)
                    continue
                # Only harmless successes: listing the own inbox via a normalised path.
                assert name in ("listdir", "stat", "lstat"), (name, raw)
                if name == "listdir":
                    assert all(isinstance(n, bytes | str) for n in result)
        # The server keeps serving after all of that.
        assert REPORT in await _listdir(sftp, "/inbox")
