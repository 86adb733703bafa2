"""The asyncssh hooks of sftp/compat.py seen from real clients: quick ACKs during the
login, and client protocol faults the server tolerates (sent as raw SFTP packets)."""

from __future__ import annotations

import hashlib
import socket
import struct
from typing import Any

import pytest

from qprserver.sftp import compat
from tests.functional.harness import LV_NW, MD_NW, Server, pdf_bytes

REPORT = "510512349_pruefbericht_2026.pdf"
FXP_INIT, FXP_OPEN, FXP_CLOSE, FXP_WRITE = 1, 3, 4, 6
FXP_STATUS, FXP_HANDLE = 101, 102
FXF_WRITE_CREAT_TRUNC = 0x02 | 0x08 | 0x10
FX_OK = 0


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


class RawSFTP:
    """SFTP version 3 spoken byte by byte over a subsystem channel."""

    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer = writer
        self.reader = reader
        self.next_id = 0

    async def init(self) -> None:
        self.writer.write(struct.pack(">IBI", 5, FXP_INIT, 3))
        await self._reply()

    async def _reply(self) -> tuple[int, bytes]:
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        body = await self.reader.readexactly(length)
        return body[0], body[1:]

    async def request(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        """Send one request, its packet length counting all of ``payload``; the reply."""
        self.next_id += 1
        body = bytes([kind]) + struct.pack(">I", self.next_id) + payload
        self.writer.write(struct.pack(">I", len(body)) + body)
        kind, reply = await self._reply()
        assert struct.unpack(">I", reply[:4])[0] == self.next_id
        return kind, reply[4:]

    async def open_for_writing(self, path: str) -> bytes:
        """A handle to ``path`` opened for writing (create, truncate)."""
        kind, reply = await self.request(
            FXP_OPEN, _string(path.encode()) + struct.pack(">II", FXF_WRITE_CREAT_TRUNC, 0)
        )
        assert kind == FXP_HANDLE
        return reply[4:]


def _status(reply: tuple[int, bytes]) -> int:
    kind, body = reply
    assert kind == FXP_STATUS
    return int(struct.unpack(">I", body[:4])[0])


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
async def test_the_server_sets_tcp_quickack_on_its_socket_during_the_login_only(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every setsockopt of a socket goes through socket.socket (asyncio's TransportSocket
    # delegates to it); the option is really set, and each call on the server's end of
    # a connection (its local port is the server's) is counted.
    quick_acks: list[int] = []
    setsockopt = socket.socket.setsockopt

    def observed(sock: socket.socket, level: int, option: int, value: Any) -> None:
        setsockopt(sock, level, option, value)
        quick_ack = (level, option, value) == (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if quick_ack and sock.getsockname()[1] == server.port:
            quick_acks.append(sock.fileno())

    monkeypatch.setattr(socket.socket, "setsockopt", observed)
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        logged_in = len(quick_acks)
        for _ in range(3 * compat.QUICK_ACK_PACKETS):
            await sftp.stat("/inbox")
        after = len(quick_acks)
    # Set at connect and again before each received segment of the login (asyncssh's
    # data_received on this connection), then no more: asyncssh's own method is back.
    assert 3 <= logged_in <= compat.QUICK_ACK_PACKETS + 1
    assert after == compat.QUICK_ACK_PACKETS + 1
    assert len(set(quick_acks)) == 1  # one connection, the server's socket


async def test_a_write_request_with_stale_bytes_after_its_data_stores_only_the_data(
    server: Server,
) -> None:
    # What rclone 1.60 (pkg/sftp < 1.13.6) sends for the last, short chunk of an upload:
    # the data string says 7,232 bytes, the packet carries its whole 32 KiB buffer.
    content = pdf_bytes(40_000, seed=b"rclone")
    head, tail = content[:32768], content[32768:]
    stale = b"\xee" * (32768 - len(tail))
    async with server.connect(MD_NW) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        sftp = RawSFTP(writer, reader)
        await sftp.init()
        handle = await sftp.open_for_writing(f"/outbox/{REPORT}")
        assert (
            _status(
                await sftp.request(
                    FXP_WRITE, _string(handle) + struct.pack(">Q", 0) + _string(head)
                )
            )
            == FX_OK
        )
        last = _string(handle) + struct.pack(">Q", len(head)) + _string(tail) + stale
        assert _status(await sftp.request(FXP_WRITE, last)) == FX_OK
        assert _status(await sftp.request(FXP_CLOSE, _string(handle))) == FX_OK
        writer.close()
    async with (
        server.connect(LV_NW) as conn,
        conn.start_sftp_client() as client,
        client.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        got = await f.read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(content).hexdigest()


async def test_a_write_request_shorter_than_its_data_length_is_still_a_bad_message(
    server: Server,
) -> None:
    async with server.connect(MD_NW) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        sftp = RawSFTP(writer, reader)
        await sftp.init()
        handle = await sftp.open_for_writing(f"/outbox/{REPORT}")
        # The data string claims 1,000 bytes; 10 follow.
        short = _string(handle) + struct.pack(">QI", 0, 1000) + b"x" * 10
        assert _status(await sftp.request(FXP_WRITE, short)) == 5  # SSH_FX_BAD_MESSAGE
        writer.close()
