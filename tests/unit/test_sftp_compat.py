"""Each private asyncssh hook of sftp/compat.py still finds what it relies on.

One test per hook; each fails when an asyncssh upgrade removes or changes the
private name, signature or behaviour the hook uses. Where a hook needs live
objects (a server connection, a channel, a session's clean-up) a plain asyncssh
server on port 0 with one small SFTPServer subclass provides them; behaviour
through qprserver's own server is tested in tests/functional/.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from asyncssh import auth as _auth
from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh.constants import FXP_WRITE, MSG_SERVICE_REQUEST
from asyncssh.packet import SSHPacket
from asyncssh.sftp import SFTPAttrs, SFTPServerHandler

from qprserver.errors import StartupError
from qprserver.sftp import compat, fastpath


def _params(func: Any) -> list[str]:
    return list(inspect.signature(func).parameters)


# -- the version gate ---------------------------------------------------------------


def test_the_installed_asyncssh_is_a_tested_version() -> None:
    # Fails on an upgrade: re-run this file and tests/functional, then extend the tuple.
    assert asyncssh.__version__ in compat.TESTED_VERSIONS
    compat.check_version()


def test_an_untested_asyncssh_is_refused_with_a_clear_message() -> None:
    with pytest.raises(StartupError) as refused:
        compat.check_version("2.25.0")
    message = str(refused.value)
    assert "asyncssh 2.25.0" in message
    assert "2.24.1" in message
    assert "sftp/compat.py" in message


def test_install_puts_every_class_level_hook_in_place_and_can_run_twice() -> None:
    compat.install()
    compat.install()
    assert compat.installed()


# -- login ----------------------------------------------------------------------------


def test_two_step_auth_finds_asyncssh_server_auth_handlers() -> None:
    compat.install_two_step_auth()
    for method, base in (
        (b"publickey", _auth._ServerPublicKeyAuth),
        (b"password", _auth._ServerPasswordAuth),
    ):
        installed = _auth._server_auth_handlers[method]
        assert installed.__mro__[1] is base
        assert issubclass(base, _auth.ServerAuth)
    assert inspect.iscoroutinefunction(_auth.ServerAuth.send_success)
    assert _params(_auth.ServerAuth.send_success) == ["self"]
    assert "partial_success" in _params(_auth.ServerAuth.send_failure)
    # The subclass reads the connection and the method name the handler keeps.
    assert "self._conn = conn" in inspect.getsource(_auth.Auth.__init__)
    assert "self._method = method" in inspect.getsource(_auth.ServerAuth.__init__)


def test_the_repeated_userauth_request_finds_the_connection_state_it_reads(
    plain: PlainServer,
) -> None:
    original = _connection.SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]
    assert original.__name__ == "_process_service_request"
    assert _params(original) == ["self", "_pkttype", "_pktid", "packet"]
    conn = plain.connections[-1]
    for name in ("_next_service", "_auth_in_progress", "_auth_complete"):
        assert hasattr(conn, name), name
    assert conn._auth_complete is True  # this login finished


def test_host_keys_narrow_what_the_server_options_offer(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    path = tmp_path / "host_rsa"
    key.write_private_key(str(path))
    assert b"ssh-rsa" in asyncssh.load_keypairs([str(path)])[0].host_key_algorithms
    pairs = compat.host_keys([path], ["rsa-sha2-512", "rsa-sha2-256"])
    options = asyncssh.SSHServerConnectionOptions(server_host_keys=pairs)
    assert list(options.server_host_keys) == [b"rsa-sha2-512", b"rsa-sha2-256"]


# -- each connection --------------------------------------------------------------------


def test_dropping_empty_ignores_wraps_asyncssh_send_packet() -> None:
    send = _connection.SSHConnection.send_packet
    assert _params(send) == ["self", "pkttype", "args", "handler"]
    source = inspect.getsource(send)
    assert "MSG_IGNORE" in source and "String(b'')" in source


async def test_quick_acks_wrap_the_connection_data_received(plain: PlainServer) -> None:
    assert _params(_connection.SSHConnection.data_received) == ["self", "data", "datatype"]
    async with await plain.connect():
        conn = plain.connections[-1]
        # The connection is the transport's protocol, so asyncio calls its data_received.
        assert conn._transport.get_protocol() is conn
        assert callable(conn.get_extra_info("socket").setsockopt)


async def test_the_packets_of_one_channel_flush_leave_in_one_write(plain: PlainServer) -> None:
    compat.install_coalesced_channel_writes()
    assert _params(_channel.SSHChannel._flush_send_buf) == ["channel"]  # the wrapper's
    assert "self._transport.write(data)" in inspect.getsource(_connection.SSHConnection._send)
    plain.content = os.urandom(600_000)
    async with await plain.connect() as client:
        conn = plain.connections[-1]
        compat.coalesce_writes(conn)
        writes: list[int] = []
        packets: list[int] = []
        coalesced = getattr(conn, compat._WRITES)
        send, send_packet = coalesced.send, conn.send_packet

        def counted_send(data: bytes) -> None:
            writes.append(len(data))
            send(data)

        def counted_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
            packets.append(pkttype)
            send_packet(pkttype, *args, handler=handler)

        coalesced.send = counted_send
        conn.send_packet = counted_packet
        async with (
            client.start_sftp_client() as sftp,
            sftp.open("f", "rb", block_size=262144) as f,
        ):
            writes.clear()
            packets.clear()
            data = await f.read(len(plain.content), 0)
    assert data == plain.content
    data_packets = packets.count(94)  # SSH_MSG_CHANNEL_DATA
    assert data_packets >= 600_000 // 32768
    assert len(writes) < data_packets / 4  # each 256 KiB reply: one write, not eight


async def test_the_replies_of_one_loop_turn_leave_in_one_write(plain: PlainServer) -> None:
    compat.install_coalesced_channel_writes()
    content = os.urandom(1_000_000)
    async with await plain.connect() as client:
        conn = plain.connections[-1]
        compat.coalesce_writes(conn)
        coalesced = getattr(conn, compat._WRITES)
        writes: list[int] = []
        send = coalesced.send

        def counted_send(data: bytes) -> None:
            writes.append(len(data))
            send(data)

        coalesced.send = counted_send
        async with client.start_sftp_client() as sftp, sftp.open("u", "wb", block_size=32768) as f:
            writes.clear()
            await f.write(content, 0)
            replies_written = len(writes)
    assert bytes(plain.written) == content
    requests = -(-len(content) // 32768)
    assert replies_written < requests / 2, (
        "the status replies of the writes one read brings leave together"
    )


@pytest.mark.parametrize(
    ("cipher", "mac"),
    [
        ("aes128-gcm@openssh.com", "hmac-sha2-256-etm@openssh.com"),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
        ("aes256-ctr", "hmac-sha2-512-etm@openssh.com"),
    ],
)
async def test_downloads_take_the_fast_data_packets_and_arrive_whole(
    plain: PlainServer, monkeypatch: pytest.MonkeyPatch, cipher: str, mac: str
) -> None:
    compat.install()
    built: list[int] = []
    send_data = fastpath._send_data

    def counted(conn: Any, kind: int, recipient: bytes, chunk: memoryview) -> None:
        built.append(kind)
        send_data(conn, kind, recipient, chunk)

    monkeypatch.setattr(fastpath, "_send_data", counted)
    plain.content = os.urandom(1_000_003)
    async with (
        asyncssh.connect(
            "127.0.0.1",
            plain.port,
            username="u",
            known_hosts=None,
            client_keys=None,
            encryption_algs=[cipher],
            mac_algs=[mac],
        ) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open("f", "rb", block_size=262144) as f,
    ):
        compat.coalesce_writes(plain.connections[-1])
        data = await f.read(len(plain.content), 0)
    assert data == plain.content
    assert len(built) >= len(plain.content) // 32768
    assert set(built) == {1 if "gcm" in cipher else 2}


# -- SFTP requests ------------------------------------------------------------------------


def test_the_lenient_write_wraps_asyncssh_write_handler() -> None:
    compat.install_lenient_write()
    assert SFTPServerHandler._packet_handlers[FXP_WRITE] is compat._lenient_write
    assert compat._original_write is not None
    assert compat._original_write.__name__ == "_process_write"
    assert _params(compat._original_write) == ["self", "packet"]


def test_a_write_with_trailing_bytes_is_trimmed_to_its_fields() -> None:
    fields = struct.pack(">I", 4) + b"h\0\0\0" + struct.pack(">QI", 0, 3) + b"abc"
    packet = SSHPacket(struct.pack(">BI", FXP_WRITE, 7) + fields + b"stale")
    assert packet.get_byte() == FXP_WRITE and packet.get_uint32() == 7
    trimmed = compat.trimmed_write(packet)
    assert trimmed.get_full_payload() == fields
    exact = SSHPacket(fields)
    assert compat.trimmed_write(exact) is exact


# -- logging ------------------------------------------------------------------------------


class _Unprintable:
    def __str__(self) -> str:
        raise AssertionError("formatted although DEBUG is off")


def test_debug_messages_are_not_formatted_while_debug_is_off() -> None:
    from asyncssh import logging as _logging

    compat.install_quiet_debug_log()
    logger = _logging.SSHLogger().get_child("sftp", "conn=1")
    assert isinstance(logger, logging.LoggerAdapter)
    assert _logging.SSHLogger.debug1 is compat._debug1
    level = logger.logger.level
    logger.logger.setLevel(logging.INFO)
    try:
        # asyncssh's own debug1 would call str() on the argument before asking the level.
        logger.debug1("Received %s", [_Unprintable()])
    finally:
        logger.logger.setLevel(level)


def test_debug_messages_still_log_as_asyncssh_formats_them_when_debug_is_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from asyncssh import logging as _logging

    compat.install_quiet_debug_log()
    logger = _logging.SSHLogger().get_child("sftp", "conn=1")
    with caplog.at_level("DEBUG", logger=logger.logger.name):
        logger.debug1("Received open request for %s", b"inbox/a.pdf")
    assert "[conn=1] Received open request for inbox/a.pdf" in caplog.text


# -- SFTP sessions ------------------------------------------------------------------------


def test_listing_attributes_copied_field_by_field_equal_the_constructor() -> None:
    fields = compat.attrs_fields()
    assert {"type", "size", "uid", "gid", "permissions", "atime", "mtime", "nlink"} <= set(fields)
    made = SFTPAttrs(size=5, uid=0, permissions=0o100400, mtime=9, nlink=1)
    copied = SFTPAttrs.__new__(SFTPAttrs)
    for name in fields:
        setattr(copied, name, getattr(made, name))
    assert repr(copied) == repr(made)
    assert copied.encode(3) == made.encode(3)


async def test_drain_waits_on_the_channel_session(plain: PlainServer) -> None:
    async with plain.sftp() as client, client.open("/f", "rb"):
        channel = plain.sessions[-1].channel
        session = channel._session
        assert inspect.iscoroutinefunction(session.drain)
        assert _params(session.drain) == ["datatype"]
        await asyncio.wait_for(compat.drain(channel), 5)  # nothing queued: returns


async def test_input_ended_reads_the_channel_receive_state(plain: PlainServer) -> None:
    conn = await plain.connect()
    async with conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        writer.write(struct.pack(">IBI", 5, 1, 3))  # FXP_INIT, version 3
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(length)  # FXP_VERSION
        channel = plain.sessions[-1].channel
        assert channel._recv_state == "open"
        assert not compat.input_ended(channel)
        writer.write_eof()
        await plain.exited.wait()
        assert compat.input_ended(channel)


async def test_a_close_from_asyncssh_cleanup_is_told_from_a_client_close(
    plain: PlainServer,
) -> None:
    assert inspect.iscoroutinefunction(SFTPServerHandler._cleanup)
    assert "self._server.close(file_obj)" in inspect.getsource(SFTPServerHandler._cleanup)
    async with plain.sftp() as client:
        async with client.open("/by-client", "rb"):
            pass  # opened and closed by the client itself
        await client.open("/left-open", "rb")
        # Ends the session with the handle open: asyncssh closes it in _cleanup.
        writer = plain.sessions[-1].channel
        writer.close()
        await plain.exited.wait()
    assert plain.closes == {"/by-client": False, "/left-open": True}


def test_lazy_keepalive_replaces_asyncssh_timer_reset() -> None:
    conn_class = _connection.SSHConnection
    # The receive loop in place (asyncssh's or fastpath's) resets through the instance.
    receive = inspect.getsource(conn_class._recv_data)
    assert "self._reset_keepalive_timer()" in receive or (
        conn_class._recv_data is fastpath.recv_data and "conn._reset_keepalive_timer()" in receive
    )
    assert "self._keepalive_timer_callback" in inspect.getsource(conn_class._set_keepalive_timer)
    assert "self._keepalive_count += 1" in inspect.getsource(conn_class._keepalive_timer_callback)
    loop = asyncio.new_event_loop()
    fired: list[float] = []

    class _Conn:
        _keepalive_timer: Any = None
        _loop = loop

        def __init__(self, interval: float) -> None:
            self._keepalive_interval = interval

        def _keepalive_timer_callback(self) -> None:
            fired.append(loop.time())  # asyncssh's own check

    try:
        conn: Any = _Conn(60.0)
        compat.lazy_keepalive(conn)
        conn._reset_keepalive_timer()  # data seen now: not due for 60 s
        conn._keepalive_timer_callback()
        assert not fired
        assert conn._keepalive_timer.when() >= loop.time() + 59  # re-armed after the data
        conn._keepalive_timer.cancel()
        idle: Any = _Conn(0.001)
        compat.lazy_keepalive(idle)
        time.sleep(0.01)  # nothing received for longer than the interval
        idle._keepalive_timer_callback()
        assert len(fired) == 1
    finally:
        loop.close()


# -- SFTP sessions served as requests arrive (inline.py) -----------------------------------


def test_inline_sessions_find_what_they_subclass_and_call() -> None:
    from asyncssh.stream import SSHServerStreamSession

    assert _params(SSHServerStreamSession.__init__) == [
        "self",
        "session_factory",
        "sftp_factory",
        "sftp_version",
        "allow_scp",
    ]
    started = inspect.getsource(SSHServerStreamSession.session_started)
    assert "self._chan.get_subsystem() == 'sftp'" in started
    assert "run_sftp_server(self._init_sftp_server()" in started
    assert _params(SFTPServerHandler.__init__) == [
        "self",
        "server",
        "reader",
        "writer",
        "sftp_version",
    ]
    assert inspect.iscoroutinefunction(SFTPServerHandler._process_packet)
    assert _params(SFTPServerHandler._process_packet) == ["self", "pkttype", "pktid", "packet"]
    # run() reads INIT with recv_packet, answers it, then hands over to recv_packets.
    run = inspect.getsource(SFTPServerHandler.run)
    assert "packet = await self.recv_packet()" in run
    assert run.rstrip().endswith("await self.recv_packets()")
    send = inspect.getsource(asyncssh.sftp.SFTPHandler.send_packet)
    assert "self._writer.channel.is_closing()" in send
    assert "payload = Byte(pkttype) + b''.join(args)" in send
    read = inspect.getsource(SFTPServerHandler._process_read)
    assert "file_obj = self._file_handles.get(handle)" in read
    assert "raise SFTPEOFError" in read


async def test_an_inline_session_serves_reads_stats_and_closes(inline: PlainServer) -> None:
    inline.content = os.urandom(3 * 1024 * 1024 + 5)
    async with inline.sftp() as client:
        async with client.open("/big", "rb") as f:
            assert await f.read() == inline.content  # many reads in flight
        assert (await client.stat("/x")).size == len(inline.content)
        async with client.open("/small", "rb") as f:
            assert await f.read(10, 5) == inline.content[5:15]
            assert await f.read(10, len(inline.content) + 1) == b""  # EOF
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await client.stat("/missing")
    await asyncio.wait_for(inline.exited.wait(), 5)
    assert inline.closes == {"/big": False, "/small": False}


async def test_an_inline_session_cleans_up_handles_left_open(inline: PlainServer) -> None:
    async with inline.sftp() as client:
        await client.open("/left-open", "rb")
        inline.sessions[-1].channel.close()
        await asyncio.wait_for(inline.exited.wait(), 5)
    assert inline.closes == {"/left-open": True}


async def test_an_inline_session_takes_requests_split_and_batched(inline: PlainServer) -> None:
    inline.content = b"0123456789"
    conn = await inline.connect()
    async with conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)

        async def reply() -> bytes:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            return bytes(await reader.readexactly(length))

        writer.write(struct.pack(">IBI", 5, 1, 3))  # FXP_INIT, version 3
        assert (await reply())[0] == 2  # FXP_VERSION
        name = b"/f"
        opened = struct.pack(">BII", 3, 7, len(name)) + name + struct.pack(">II", 1, 0)
        packet = struct.pack(">I", len(opened)) + opened
        writer.write(packet[:3])  # an OPEN in three pieces
        await asyncio.sleep(0.05)
        writer.write(packet[3:9])
        await asyncio.sleep(0.05)
        writer.write(packet[9:])
        handle_reply = await reply()
        assert handle_reply[:5] == struct.pack(">BI", 102, 7)  # FXP_HANDLE
        handle = handle_reply[9:]
        reads = b""
        for pktid, offset in ((8, 0), (9, 4), (10, 20)):
            body = struct.pack(">BII", 5, pktid, len(handle)) + handle
            body += struct.pack(">QI", offset, 4)
            reads += struct.pack(">I", len(body)) + body
        waits = struct.pack(">BII", 7, 11, len(name)) + name  # LSTAT, answered after a wait
        writer.write(struct.pack(">I", len(waits)) + waits + reads)  # LSTAT and three READs
        attrs = await reply()
        assert attrs[:5] == struct.pack(">BI", 105, 11)  # FXP_ATTRS first
        assert await reply() == struct.pack(">BII", 103, 8, 4) + b"0123"
        assert await reply() == struct.pack(">BII", 103, 9, 4) + b"4567"
        eof = await reply()
        assert eof[:9] == struct.pack(">BII", 101, 10, 1)  # FXP_STATUS, FX_EOF
        writer.write_eof()
        await asyncio.wait_for(inline.exited.wait(), 5)
    assert inline.closes == {"/f": True}


# -- a plain asyncssh server ----------------------------------------------------------------


class _Recorder(asyncssh.SFTPServer):
    """Opens any name for reading and records how each handle was closed."""

    def __init__(self, chan: Any, plain: PlainServer) -> None:
        super().__init__(chan)
        self.plain = plain
        plain.sessions.append(self)
        plain.started.set()

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        return path.decode()

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        return self.plain.content[offset : offset + size]

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        written = self.plain.written
        written[offset : offset + len(data)] = data
        return len(data)

    def read_now(self, file_obj: object, offset: int, size: int) -> bytes | None:
        # As MailboxSFTPServer: inline sessions answer reads without a dispatch.
        return None if str(file_obj).endswith("slow") else self.read(file_obj, offset, size)

    def fstat(self, file_obj: object) -> SFTPAttrs:
        return SFTPAttrs(size=len(self.plain.content))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        await asyncio.sleep(0.05)  # a request that waits: the ones behind it wait too
        return SFTPAttrs(size=len(path))

    def stat(self, path: bytes) -> SFTPAttrs:
        if path == b"/missing":
            raise asyncssh.SFTPNoSuchFile("No such file")
        return SFTPAttrs(size=len(self.plain.content))

    def close(self, file_obj: object) -> None:
        self.plain.closes[str(file_obj)] = compat.in_session_cleanup()

    def exit(self) -> None:
        self.plain.exited.set()


@dataclass
class PlainServer:
    """asyncssh on port 0, no login needed; what it saw is kept here."""

    port: int = 0
    content: bytes = b""  # what every file holds
    written: bytearray = field(default_factory=bytearray)  # what uploads wrote
    connections: list[Any] = field(default_factory=list)
    sessions: list[_Recorder] = field(default_factory=list)
    closes: dict[str, bool] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> asyncssh.SSHClientConnection:
        conn = await asyncssh.connect(
            "127.0.0.1", self.port, username="u", known_hosts=None, client_keys=None
        )
        return conn

    def sftp(self) -> Any:
        plain = self

        class _Client:
            async def __aenter__(self) -> asyncssh.SFTPClient:
                self.conn = await plain.connect()
                self.client = await self.conn.start_sftp_client()
                return self.client

            async def __aexit__(self, *exc: object) -> None:
                self.client.exit()
                self.conn.close()
                await self.conn.wait_closed()

        return _Client()


@pytest.fixture
async def plain() -> AsyncIterator[PlainServer]:
    state = PlainServer()

    class _Open(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            state.connections.append(conn)

        def begin_auth(self, username: str) -> bool:
            return False  # no authentication needed

    acceptor = await asyncssh.create_server(
        _Open,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        sftp_factory=lambda chan: _Recorder(chan, state),
    )
    state.port = acceptor.get_port()
    # The hooks that read a finished login need one.
    async with await state.connect():
        pass  # one login, so the hooks have a finished login to read
    yield state
    acceptor.close()
    await acceptor.wait_closed()


@pytest.fixture
async def inline() -> AsyncIterator[PlainServer]:
    """The plain server, its sessions made by ``compat.sftp_session``."""
    state = PlainServer()

    class _Open(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            state.connections.append(conn)

        def begin_auth(self, username: str) -> bool:
            return False

        def session_requested(self) -> Any:
            return compat.sftp_session(lambda chan: _Recorder(chan, state), reads_on_loop=True)

    acceptor = await asyncssh.create_server(
        _Open,
        "127.0.0.1",
        0,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
    )
    state.port = acceptor.get_port()
    yield state
    acceptor.close()
    await acceptor.wait_closed()


# -- connections from elsewhere ---------------------------------------------------------


async def test_a_socket_accepted_by_hand_is_served_as_the_listener_serves_one() -> None:
    init = _params(_connection.SSHServerConnection.__init__)
    assert init[:5] == ["self", "loop", "options", "acceptor", "error_handler"]
    made: list[Any] = []

    class _Open(asyncssh.SSHServer):
        def connection_made(self, conn: Any) -> None:
            made.append(conn)

        def begin_auth(self, username: str) -> bool:
            return False

    key = asyncssh.generate_private_key("ssh-ed25519")
    factory = await compat.accepted_connection_factory(_Open, server_host_keys=[key])
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listening:
        listening.setblocking(False)

        async def serve() -> None:
            sock, _ = await loop.sock_accept(listening)
            _, conn = await loop.connect_accepted_socket(factory, sock)
            await conn.wait_closed()  # type: ignore[attr-defined]

        served = asyncio.create_task(serve())
        async with asyncssh.connect(
            "127.0.0.1",
            listening.getsockname()[1],
            username="u",
            known_hosts=None,
            client_keys=None,
        ) as conn:
            assert conn.get_server_host_key() is not None
        await asyncio.wait_for(served, 10)
    assert [type(c) for c in made] == [asyncssh.SSHServerConnection]
