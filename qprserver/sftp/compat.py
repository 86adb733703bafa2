"""Every use of asyncssh's private API, behind one version gate.

asyncssh has no public API for a few things this server needs (partial success,
a repeated ``ssh-userauth`` request, narrowed host key algorithms, dropping its
CBC-era ignore packets, one write for the channel flushes of a loop turn, tolerating
rclone's padded writes, bounded replies, SFTP requests served without a task each,
telling asyncssh's clean-up from a client's
close, building listing attributes fast, debug messages that cost nothing while
DEBUG is off, serving a socket another process accepted). Each is one small function below
whose docstring says why it exists and what breaks without it. Nothing else in
qprserver touches a private name of asyncssh, but for ``fastpath.py`` (channel data
packets) and ``inline.py`` (SFTP requests served as they arrive, ``sftp_session``),
which live under the same gate.

The file is longer than a module should be (about 450 lines) on purpose: one
file for every private name of asyncssh is the rule that keeps an upgrade's risk
in one place.

``install`` runs once when the server starts: it refuses any asyncssh not in
``TESTED_VERSIONS`` (pyproject pins ``asyncssh>=2.24.1,<2.25``) and puts the
class-level hooks in place; the others are called per connection or session.
``tests/unit/test_sftp_compat.py`` holds one test per hook that fails when an
upgrade changes what it relies on; behaviour is covered end to end in
``tests/functional/`` (two factors, also paramiko's, in ``test_security.py``, ignore
packets in ``test_sftp_mailbox.py``, quick ACKs and padded writes in
``test_sftp_compat.py``, cut-off uploads in ``test_isolation.py``).

Checked and still private in 2.24.1: the server options offer no host key
algorithm list (``server_host_key_algs`` is the client's), no drain on
``SFTPServer``'s channel, and no way to learn that a channel received EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import asyncssh
from asyncssh import auth as _auth
from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh import logging as _logging
from asyncssh.constants import (
    FXP_FSTAT,
    FXP_READ,
    FXP_REALPATH,
    FXP_WRITE,
    MSG_IGNORE,
    MSG_SERVICE_ACCEPT,
    MSG_SERVICE_REQUEST,
)
from asyncssh.packet import SSHPacket, String
from asyncssh.sftp import SFTPAttrs, SFTPServerHandler

from qprserver.errors import ConfigError, StartupError
from qprserver.sftp import fastpath, inline

TESTED_VERSIONS = ("2.24.1",)


def check_version(version: str = asyncssh.__version__) -> None:
    """Refuse an asyncssh whose private API these hooks were not tested against."""
    if version not in TESTED_VERSIONS:
        raise StartupError(
            f"asyncssh {version} is installed, but qprserver was tested only with "
            f"{', '.join(TESTED_VERSIONS)} (it relies on private parts of asyncssh, "
            "qprserver/sftp/compat.py); install asyncssh==" + TESTED_VERSIONS[-1]
        )


def install() -> None:
    """Check the version, then put every class-level hook in place (idempotent)."""
    check_version()
    install_two_step_auth()
    install_repeated_userauth_request()
    install_lenient_write()
    install_quiet_debug_log()
    install_coalesced_channel_writes()
    fastpath.install_cached_gcm_keys()
    fastpath.install_receive_loop()


def installed() -> bool:
    """True when asyncssh runs with every class-level hook of ``install``."""
    handlers = _connection.SSHServerConnection._packet_handlers
    return (
        all(_auth._server_auth_handlers.get(m) is _TWO_STEP.get(m) for m in _FIRST_FACTORS)
        and handlers.get(MSG_SERVICE_REQUEST) is _service_request
        and _connection.SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]
        is _ORIGINAL_SERVICE_REQUEST
        and _sftp_handlers().get(FXP_WRITE) is _lenient_write
        and _logging.SSHLogger.debug1 is _debug1
        and _channel.SSHChannel._flush_send_buf is _coalesced_flush
        and fastpath.installed()
        and _connection.SSHConnection._recv_data is fastpath.recv_data
    )


# -- login ------------------------------------------------------------------------

_FIRST_FACTORS = (b"publickey", b"password")
_TWO_STEP: dict[bytes, type[Any]] = {}


class FirstFactorOwner(Protocol):
    """What the SSHServer of a connection tells about a verified first factor."""

    def first_factor_verified(self, method: str) -> bool:
        """Record the verified factor; True when login is complete, False for partial."""
        ...


def _two_step(base: type[Any]) -> type[Any]:
    class TwoStep(base):  # type: ignore[misc]
        async def send_success(self) -> None:
            owner = self._conn.get_owner()
            check = getattr(owner, "first_factor_verified", None)
            if check is not None and not check(self._method.decode("ascii")):
                self.send_failure(partial_success=True)
                return
            await super().send_success()

    TwoStep.__name__ = TwoStep.__qualname__ = f"TwoStep{base.__name__}"
    return TwoStep


def install_two_step_auth() -> None:
    """Answer a verified key or password with *partial success* when a code is due.

    OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` asks for the
    second factor after a partial-success failure; asyncssh's server never sends
    one. Its publickey and password handlers (``asyncssh.auth._server_auth_handlers``,
    ``_ServerPublicKeyAuth``, ``_ServerPasswordAuth``) are replaced by subclasses
    whose ``send_success`` asks the owner (``FirstFactorOwner``); the methods offered
    next are re-read from its ``*_auth_supported`` hooks. ``send_success`` of the
    publickey handler runs only after the signature verified, never on the probe.
    Without it an account with two factors logs in with its key alone, or not at all.
    """
    for method, base in (
        (b"publickey", _auth._ServerPublicKeyAuth),
        (b"password", _auth._ServerPasswordAuth),
    ):
        if method not in _TWO_STEP:
            _TWO_STEP[method] = _two_step(base)
        _auth._server_auth_handlers[method] = _TWO_STEP[method]


_USERAUTH = b"ssh-userauth"
_ORIGINAL_SERVICE_REQUEST = _connection.SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]


def _service_request(conn: Any, pkttype: int, pktid: int, packet: Any) -> None:
    if conn._next_service is None and conn._auth_in_progress and not conn._auth_complete:
        service = packet.get_string()
        packet.check_end()
        if service != _USERAUTH:
            raise asyncssh.ServiceNotAvailable("Unexpected service in service request")
        conn.send_packet(MSG_SERVICE_ACCEPT, String(service))
        return
    _ORIGINAL_SERVICE_REQUEST(conn, pkttype, pktid, packet)


def install_repeated_userauth_request() -> None:
    """Accept ``ssh-userauth`` again until login completes, as OpenSSH's sshd does.

    paramiko sends a SERVICE_REQUEST before every method it tries, so after the
    partial success its keyboard-interactive step asks again; asyncssh accepts it
    once and disconnects ("Unexpected service in service request"). Only server
    connections get the handler (``SSHServerConnection._packet_handlers``; the
    class table is shared with clients), using the connection's ``_next_service``,
    ``_auth_in_progress`` and ``_auth_complete``. Without it paramiko clients cannot
    log in with two factors.
    """
    _connection.SSHServerConnection._packet_handlers = {
        **_connection.SSHConnection._packet_handlers,
        MSG_SERVICE_REQUEST: _service_request,
    }


def host_keys(paths: Sequence[Path], algorithms: Sequence[str]) -> list[Any]:
    """The host key pairs, each offering only ``algorithms`` (in that order).

    asyncssh offers every algorithm a key can sign with (an RSA key also SHA-1
    ``ssh-rsa`` and four ssh.com variants) and has no server option to narrow that;
    its offer is built from ``SSHKeyPair.host_key_algorithms``, an undocumented
    attribute narrowed here. Without it ``server.host_key_algs`` does nothing.
    """
    allowed = [name.encode("ascii") for name in algorithms]
    pairs = []
    for pair in asyncssh.load_keypairs([str(p) for p in paths]):
        offered = [alg for alg in allowed if alg in pair.host_key_algorithms]
        if offered:
            pair.host_key_algorithms = offered
            pairs.append(pair)
    if not pairs:
        raise ConfigError(
            "server.host_keys: no key signs with any algorithm of server.host_key_algs"
        )
    return pairs


# -- each connection ----------------------------------------------------------------

_EMPTY = String(b"")


def drop_empty_ignores(conn: Any) -> None:
    """No empty ``SSH_MSG_IGNORE`` before every packet, on this connection only.

    asyncssh's ``SSHConnection.send_packet`` sends one before each packet once
    encryption is on, a countermeasure against the CBC attacks on SSH. qprserver
    offers only AES-GCM and AES-CTR, where it protects nothing, and it doubles the
    packets encrypted and written: two per SFTP reply (OpenSSH sends none). The
    instance's ``send_packet`` is wrapped to drop exactly those, relying on
    asyncssh's recursive call with ``(MSG_IGNORE, String(b""))``. Without it
    replies cost twice the packets.
    """
    send: Callable[..., None] = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY,):
            return
        send(pkttype, *args, handler=handler)

    conn.send_packet = send_packet


QUICK_ACK_PACKETS = 32


def quick_acks_during_login(conn: Any) -> None:
    """Acknowledge the client's first segments at once, not after the delayed-ACK timer.

    An OpenSSH client that runs no terminal keeps Nagle's algorithm on, so its second
    small packet in a row (ECDH_INIT after KEXINIT, SERVICE_REQUEST after NEWKEYS)
    waits for the ACK of the first; with the kernel's delayed ACKs that cost about
    40 ms twice in every login (70 ms → 21 ms). Linux drops TCP_QUICKACK again on its
    own, so it is set before each of the first ``QUICK_ACK_PACKETS`` receives, through
    the connection's ``data_received(data, datatype)``: the connection is asyncio's
    protocol, and the transport looks the method up on each call. Without it every
    login waits about 80 ms longer.
    """
    sock = conn.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_QUICKACK"):
        return
    receive = conn.data_received
    left = QUICK_ACK_PACKETS

    def data_received(data: bytes, datatype: Any = None) -> None:
        nonlocal left
        left -= 1
        if left <= 0:
            del conn.data_received  # back to asyncssh's own method
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        receive(data, datatype)

    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        conn.data_received = data_received


def lazy_keepalive(conn: Any) -> None:
    """Note the time of received data instead of re-arming the keep-alive timer.

    asyncssh cancels and re-schedules the connection's keep-alive timer on every
    read from the socket (``SSHConnection._reset_keepalive_timer``: a ``call_later``,
    a timer handle and a heap entry per read; about 1.4 % of an ``mget``'s samples).
    On this connection that reset only notes the time; the timer callback, when it
    fires, re-arms itself for ``interval`` after the last data seen, and only past
    that runs asyncssh's own ``_keepalive_timer_callback`` (which counts and sends
    the keep-alive request). The first probe so goes out ``interval`` after the last
    data, as before; ``_set_keepalive_timer`` looks the callback up on the instance.
    Without it keep-alives work the same, at a timer per read.
    """
    interval = conn._keepalive_interval
    if not interval:
        return
    loop = conn._loop
    last = [loop.time()]
    check = conn._keepalive_timer_callback

    def reset() -> None:
        last[0] = loop.time()

    def callback() -> None:
        due = last[0] + interval
        if loop.time() < due:
            conn._keepalive_timer = loop.call_at(due, callback)
            return
        check()

    conn._reset_keepalive_timer = reset
    conn._keepalive_timer_callback = callback


# Where a connection keeps its ``_Writes`` (``coalesce_writes``).
_WRITES = "_qpr_writes"


class _Writes:
    """The packets of a connection's channel flushes, written with one call per turn."""

    __slots__ = ("held", "loop", "parts", "send")

    def __init__(self, send: Callable[[bytes], None], loop: asyncio.AbstractEventLoop) -> None:
        self.send = send  # asyncssh's own ``_send`` of the connection
        self.loop = loop
        self.parts: list[bytes] | None = None  # collecting while not None
        self.held: list[bytes] | None = None  # flushed, written at the end of the turn

    def hold(self, parts: list[bytes]) -> None:
        if self.held is None:
            self.held = parts
            self.loop.call_soon(self.release)
        else:
            self.held += parts

    def release(self) -> None:
        held = self.held
        if held:
            self.held = None
            self.send(held[0] if len(held) == 1 else b"".join(held))


def coalesce_writes(conn: Any) -> None:
    """Write the SSH packets of the channel flushes of one event-loop turn with one
    transport write.

    asyncssh hands every SSH packet to the transport on its own
    (``SSHConnection._send`` → ``transport.write``, one ``send`` system call each
    while the socket takes it): an SFTP read reply of 255 KiB leaves as eight
    32 KiB channel packets and eight system calls, and the status replies to the
    writes of an upload in 32 KiB requests (pkg/sftp, paramiko; about eight per
    256 KiB the socket delivers) left one by one. A py-spy profile of an ``mget``
    put 40 % of the serving thread's samples in ``transport.write``, one of a
    1 GiB ``put`` with OpenSSH's 255 KiB writes 16 % (status replies and window
    adjusts). On this connection ``_send`` is wrapped to gather what the channel's
    ``_flush_send_buf`` sends while it runs (``install_coalesced_channel_writes``);
    the gathered packets are held and written, joined, by a callback at the end of
    the event loop's turn (``loop.call_soon``). Anything the connection sends
    outside a flush (window adjusts, channel and connection close, disconnect,
    key exchange) first writes what is held, so the order of all writes is
    unchanged. Without it downloads make a system call per packet and uploads one
    per request.
    """
    writes = _Writes(conn._send, asyncio.get_running_loop())

    def send(data: bytes) -> None:
        parts = writes.parts
        if parts is not None:
            parts.append(data)
            return
        if writes.held:
            writes.release()
        writes.send(data)

    conn._send = send
    setattr(conn, _WRITES, writes)


_original_flush: Callable[[Any], None] | None = None


def _coalesced_flush(channel: Any) -> None:
    assert _original_flush is not None
    writes: _Writes | None = getattr(channel._conn, _WRITES, None)
    if writes is None or writes.parts is not None:
        _original_flush(channel)
        return
    parts: list[bytes] = []
    writes.parts = parts
    try:
        _original_flush(channel)
    finally:
        writes.parts = None
        if parts:
            writes.hold(parts)


def install_coalesced_channel_writes() -> None:
    """Replace ``SSHChannel._flush_send_buf``, where channel data becomes SSH packets,
    by ``fastpath.flush_send_buf`` (fewer copies per packet), wrapped so that
    connections set up with ``coalesce_writes`` write a flush's packets with one call."""
    global _original_flush
    if _channel.SSHChannel._flush_send_buf is not _coalesced_flush:
        _original_flush = fastpath.flush_send_buf
        _channel.SSHChannel._flush_send_buf = _coalesced_flush  # type: ignore[method-assign,assignment]


# -- SFTP requests -------------------------------------------------------------------

_Handler = Callable[[Any, SSHPacket], Awaitable[Any]]
_original_write: _Handler | None = None


def _sftp_handlers() -> dict[Any, _Handler]:
    return SFTPServerHandler._packet_handlers  # type: ignore[return-value]


def trimmed_write(packet: SSHPacket) -> SSHPacket:
    """The write request without bytes beyond its data string; ``packet`` itself if none."""
    full = packet.get_full_payload()
    start = len(packet.get_consumed_payload())
    pos = start
    # handle (string), offset (uint64), data (string): the fields asyncssh reads.
    if pos + 4 > len(full):
        return packet
    pos += 4 + int.from_bytes(full[pos : pos + 4], "big") + 8
    if pos + 4 > len(full):
        return packet
    end = pos + 4 + int.from_bytes(full[pos : pos + 4], "big")
    if end >= len(full):
        return packet  # exact, or too short: asyncssh reports the latter itself
    return SSHPacket(full[start:end])


async def _lenient_write(handler: Any, packet: SSHPacket) -> Any:
    assert _original_write is not None
    return await _original_write(handler, trimmed_write(packet))


def install_lenient_write() -> None:
    """Ignore bytes an SSH_FXP_WRITE carries after its data, as OpenSSH's sftp-server does.

    github.com/pkg/sftp before v1.13.6 (rclone up to 1.61, Debian 12's 1.60.1) sends
    the last, short chunk of an upload with the right data length but the unused
    rest of its 32 KiB buffer behind it, counted in the packet length. asyncssh's
    ``SSHPacket.check_end`` answers SSH_FX_BAD_MESSAGE, so every such upload whose
    size is not a multiple of 32 KiB failed (fixed upstream in pkg/sftp 8add055).
    The FXP_WRITE entry of ``SFTPServerHandler._packet_handlers`` is wrapped: a
    longer request is cut before asyncssh decodes it; others pass untouched (no
    copy). Without it rclone 1.60 cannot upload.
    """
    global _original_write
    handlers = _sftp_handlers()
    if handlers[FXP_WRITE] is not _lenient_write:
        _original_write = handlers[FXP_WRITE]
        handlers[FXP_WRITE] = _lenient_write


# -- logging -------------------------------------------------------------------------

_DEBUG = logging.DEBUG


def _debug1(self: Any, msg: str, *args: Any, **kwargs: Any) -> None:
    if self.isEnabledFor(_DEBUG):
        self.log(_DEBUG, msg, *args, **kwargs)


def install_quiet_debug_log() -> None:
    """Make asyncssh's level-1 debug messages cost nothing while DEBUG is off.

    Every SFTP request logs twice through ``SSHLogger.debug1`` ("Received read …",
    "Sending …"), which converts each argument to text (``SSHLogger.log``) before
    the logger asks whether DEBUG is on at all; the issue's profile of an ``mget``
    put 2.9 % of the serving process there. The class's ``debug1`` is replaced by
    one that asks first (``LoggerAdapter.isEnabledFor``, cached by the logger);
    with DEBUG on, the same message is logged as before. ``debug2`` and ``packet``
    already check asyncssh's own debug level first. Without it requests are
    slower, not wrong.
    """
    _logging.SSHLogger.debug1 = _debug1  # type: ignore[method-assign]


# -- SFTP sessions -------------------------------------------------------------------

# Requests that may start outside a task on any database: they read or write no
# database, and wait for nothing but a full send buffer.
_ALWAYS_INLINE = frozenset((FXP_READ, FXP_WRITE, FXP_FSTAT, FXP_REALPATH))


def sftp_session(factory: Callable[[Any], Any], *, reads_on_loop: bool) -> Any:
    """The session of a channel: ``sftp`` served as requests arrive (``inline.py``),
    ``scp`` as asyncssh serves it.

    Returned from ``SSHServer.session_requested`` (public; asyncssh then asks the
    session for the subsystem or command). ``inline.SFTPSession`` subclasses
    asyncssh's ``SSHServerStreamSession`` and ``SFTPServerHandler`` and calls the
    handler's ``_process_packet``, ``_cleanup``, ``_file_handles`` and ``_version``;
    ``test_sftp_compat.py`` pins what it relies on. A request starts in asyncssh's
    data callback, outside any task; one that then waits goes on in a task. Code
    that needs a task before its first wait (asyncpg's timeouts) must not start
    there: on PostgreSQL only the requests of ``_ALWAYS_INLINE`` start in the
    callback, on SQLite (``reads_on_loop``) all. Without it every request costs a
    task wake-up, two stream reads and a write of its own.
    """

    def inline_type(pkttype: int) -> bool:
        return reads_on_loop or pkttype in _ALWAYS_INLINE

    return inline.SFTPSession(factory, asyncssh.sftp.MIN_SFTP_VERSION, True, inline_type)


def attrs_fields() -> tuple[str, ...]:
    """The fields of ``SFTPAttrs``, for building listing attributes from a template.

    ``ls -l`` of a large folder builds one SFTPAttrs per entry; copying a template's
    fields onto ``SFTPAttrs.__new__`` costs half of asyncssh's keyword constructor.
    asyncssh's ``Record`` keeps the fields (with defaults) in ``__slots__``. Without
    it listings are slower, not wrong.
    """
    return tuple(SFTPAttrs.__slots__)


async def drain(channel: Any) -> None:
    """Wait until the channel's queued output falls to its low-water mark.

    asyncssh writes SFTP replies without waiting, so a client that sends reads but
    does not take the replies would make the server buffer without bound. The
    channel's session (``SSHServerChannel._session``, an ``SSHServerStreamSession``)
    pauses above the high-water mark and wakes its ``drain(datatype)`` waiters at the
    low one; neither is public. Without it ``security.max_write_buffer`` holds nothing.
    """
    await channel._session.drain(None)


def input_ended(channel: Any) -> bool:
    """True once the channel received EOF or close from the client.

    A client's FXP_CLOSE always arrives before its EOF, so a close after that is
    asyncssh's clean-up of a dead session (e.g. a killed ``sftp`` whose ``ssh``
    child half-closes the channel). Read from ``SSHChannel._recv_state`` ("open"
    until then). Without it such an upload would become a document, not a partial.
    """
    return getattr(channel, "_recv_state", "open") != "open"


def in_session_cleanup() -> bool:
    """True when called (at any depth) from asyncssh's clean-up of an SFTP session.

    ``SFTPServerHandler._cleanup`` closes every handle still open when a session
    ends for any reason, also while the channel is still open (e.g. after a
    malformed packet). Only the call stack tells that close from a client's
    FXP_CLOSE. Without it a cut-off upload would become a truncated document.
    """
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_cleanup" and isinstance(
            frame.f_locals.get("self"), SFTPServerHandler
        ):
            return True
        frame = frame.f_back
    return False


async def accepted_connection_factory(
    server_factory: Callable[[], asyncssh.SSHServer], **options: Any
) -> Callable[[], asyncio.Protocol]:
    """The protocol factory asyncssh's listener gives ``loop.create_server``, for
    ``loop.connect_accepted_socket`` with a socket accepted by another process.

    ``asyncssh.listen`` builds one ``SSHServerConnection(loop, options, acceptor,
    error_handler)`` per accepted socket with options constructed once; the
    constructor's arguments are not documented. ``run_server`` (public) serves one
    accepted socket but constructs the options (host keys and all) again for each
    connection and only returns once its login completed. Without it connections
    cannot be spread over the worker processes (``sftp/spread.py``).
    """
    loop = asyncio.get_running_loop()
    built = await asyncssh.SSHServerConnectionOptions.construct(
        None, server_factory=server_factory, **options
    )

    def factory() -> asyncio.Protocol:
        return _connection.SSHServerConnection(loop, built, None, None)

    return factory
