"""SFTP requests answered as they arrive: no stream reader, no task per request.

Part of the private-API rule of ``compat.py`` (same version gate; ``compat.sftp_session``
makes the sessions): it subclasses asyncssh's ``SSHServerStreamSession`` and
``SFTPServerHandler`` and calls the handler's ``_process_packet`` and ``_cleanup``.

asyncssh runs an SFTP session as one task reading the channel through a stream
(``SSHReader.readexactly`` twice per request, each under a lock; when the client waits
for each answer, as ``mget`` does for every stat, open, read and close, every request
also wakes that task through a future and another turn of the event loop) and writes
every reply with a channel write of its own. Here the channel's data comes straight
to ``SFTPSession.data_received`` (asyncssh's public session callback), which cuts it
into requests and hands each to asyncssh's own dispatch, ``_process_packet``: every
request is decoded, served by ``MailboxSFTPServer`` and answered, errors included,
exactly as before. The dispatch runs right there in the callback; only a request that
really waits (a database write, an upload's completion, a full send buffer) goes on
in a task, and the requests behind it wait until it is done — one request at a time,
in order, as asyncssh's loop does. The replies of the requests of one callback go
out with one channel write. The session's first packet (INIT) and its end (EOF,
a lost channel, a malformed packet) go through asyncssh's ``run`` and ``_cleanup``.

Reads of open downloads skip even the dispatch (``_answer_read``): the bytes from
``MailboxSFTPServer.read_now`` (None: the usual way) behind a 13-byte header.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from asyncssh.constants import FXP_DATA, FXP_READ, FXP_STATUS
from asyncssh.logging import SSHLogger
from asyncssh.packet import Byte, PacketDecodeError, SSHPacket, UInt32
from asyncssh.sftp import (
    MAX_SFTP_PACKET_LEN,
    SFTPBadMessage,
    SFTPEOFError,
    SFTPError,
    SFTPNoConnection,
    SFTPServerHandler,
)
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

# Replies gathered beyond this many bytes go out at once, so that the send buffer a
# read checks (``MailboxSFTPServer.read_now``) sees them.
FLUSH_BYTES = 1 << 20
# Received requests not yet served beyond this pause the channel (its window then
# closes) until half of them are served.
PAUSE_BYTES = 8 << 20

_DATA = Byte(FXP_DATA)
_PACKET_DEBUG_LEVEL = 3  # asyncssh logs SFTP packets at this debug level


class _Continue:
    """A coroutine already stepped once (it yielded ``first``), driven on to its end:
    PEP 380's delegation, so a task can take over where the callback stopped."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _continue(coro: Coroutine[Any, Any, Any], first: Any) -> None:
    await _Continue(coro, first)


class InlineHandler(SFTPServerHandler):
    """asyncssh's SFTP server handler, fed by ``SFTPSession`` instead of a stream."""

    def __init__(
        self, session: SFTPSession, server: Any, reader: Any, writer: Any, version: int
    ) -> None:
        super().__init__(server, reader, writer, version)
        self._qpr_session = session

    async def recv_packet(self) -> SSHPacket:
        # Only ``run`` asks (for INIT); later packets come from the session's callback.
        return await self._qpr_session.first_packet()

    async def recv_packets(self) -> None:
        # ``run`` has answered INIT: from now on the session serves requests itself.
        self._qpr_session.started()

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        out = self._qpr_session.out
        if out is None:
            super().send_packet(pkttype, pktid, *args)
            return
        writer = self._writer
        if not writer:
            raise SFTPNoConnection("Connection not open")
        if writer.channel.is_closing():
            return
        payload = Byte(pkttype) + b"".join(args)
        out.append(UInt32(len(payload)))
        out.append(payload)
        self._qpr_session.out_bytes += 4 + len(payload)
        self.log_sent_packet(pkttype, pktid, payload)


class SFTPSession(SSHServerStreamSession[bytes]):
    """A session channel; the ``sftp`` subsystem is served by ``InlineHandler``,
    anything else (``scp``) as asyncssh's stream session serves it.

    ``inline(pkttype)`` says whether a request of that type may start in the
    callback (outside any task; see ``compat.sftp_session``).
    """

    _chan: Any  # these three set by asyncssh's ``connection_made``
    _conn: Any
    _loop: Any

    def __init__(
        self,
        sftp_factory: Callable[[Any], Any],
        sftp_version: int,
        allow_scp: bool,
        inline: Callable[[int], bool],
    ) -> None:
        super().__init__(None, sftp_factory, sftp_version, allow_scp)
        self._inline = inline
        self._handler: InlineHandler | None = None
        self._server: Any = None
        self._read_now: Callable[[object, int, int], bytes | None] | None = None
        self._ctx = contextvars.Context()
        self._chunks: list[bytes] = []  # received, not yet served; the first from _pos
        self._pos = 0
        self._have = 0
        self._busy = True  # INIT not answered yet, a request under way, or ended
        self._started = False
        self._ended = False
        self._eof = False
        self._lost: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pumping = False
        self._paused = False
        self.out: list[bytes] | None = None  # replies gathered while pumping
        self.out_bytes = 0

    # -- asyncssh's session callbacks ---------------------------------------------

    def session_started(self) -> None:
        chan = self._chan
        if chan.get_subsystem() != "sftp":
            super().session_started()
            return
        server = self._init_sftp_server()
        assert not inspect.isawaitable(server)  # MailboxSFTPServer is made at once
        self._server = server
        self._read_now = getattr(server, "read_now", None)
        reader = SSHReader(self, chan)
        writer = SSHWriter(self, chan)
        self._handler = InlineHandler(self, server, reader, writer, self._sftp_version)
        self._ctx = contextvars.copy_context()
        reader.logger.info("Starting SFTP server")
        task = self._conn.create_task(self._handler.run(), reader.logger)
        task.add_done_callback(self._run_done)

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self._handler is None:
            super().data_received(data, datatype)
            return
        if datatype is not None or not data or self._ended:
            return
        self._chunks.append(data)
        self._have += len(data)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if not self._busy:
            self._pump()
        elif self._have > PAUSE_BYTES and not self._paused:
            self._paused = True
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        if self._handler is None:
            return bool(super().eof_received())
        self._eof = True
        self._input_ended()
        return True  # replies may still go out; ``_cleanup`` closes the channel

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handler is not None:
            self._lost = exc  # before asyncssh's part calls ``eof_received``
        super().connection_lost(exc)  # wakes drain waiters (``compat.drain``)
        if self._handler is None:
            return
        self._eof = True
        self._input_ended()

    # -- INIT ---------------------------------------------------------------------

    async def first_packet(self) -> SSHPacket:
        payload = self._next_packet()
        while payload is None:
            if self._eof:
                raise asyncio.IncompleteReadError(b"", 4)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            payload = self._next_packet()
        return SSHPacket(payload)

    def started(self) -> None:
        self._started = True
        self._busy = False
        self._pump()

    def _run_done(self, task: asyncio.Task[None]) -> None:
        if not self._started:
            # INIT failed (asyncssh cleaned up already) or the session ended before it.
            self._ended = self._busy = True
            self._chunks.clear()

    def _input_ended(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if not self._busy:
            self._pump()

    # -- requests -----------------------------------------------------------------

    def _next_packet(self) -> bytes | None:
        """The payload of the next complete packet, taken out; None if there is none yet."""
        have = self._have
        if have < 4:
            return None
        chunks = self._chunks
        first, pos = chunks[0], self._pos
        if len(first) - pos < 4:
            first, pos = b"".join([first[pos:], *chunks[1:]]), 0
            chunks[:] = [first]
        size = int.from_bytes(first[pos : pos + 4], "big")
        if size > MAX_SFTP_PACKET_LEN:
            raise SFTPBadMessage("Max packet size exceeded")
        if have < 4 + size:
            self._pos = pos
            return None
        end = pos + 4 + size
        if len(first) < end:
            first, pos, end = b"".join([first[pos:], *chunks[1:]]), 0, 4 + size
            chunks[:] = [first]
        payload = first[pos + 4 : end]
        if end == len(first):
            del chunks[0]
            self._pos = 0
        else:
            self._pos = end
        self._have = have - 4 - size
        return payload

    def _pump(self) -> None:
        """Serve the complete requests received, in order, until one has to wait."""
        if self._pumping or self._handler is None:
            return
        self._pumping = True
        self.out = []
        try:
            while not self._busy:
                try:
                    payload = self._next_packet()
                except SFTPBadMessage as exc:
                    self._end(exc)
                    break
                if payload is None:
                    if self._eof:
                        self._end(self._lost)
                    break
                self._serve(payload)
                if self.out_bytes > FLUSH_BYTES:
                    self._flush()
        finally:
            self._flush()
            self.out = None
            self._pumping = False
        if self._paused and self._have <= PAUSE_BYTES // 2:
            self._paused = False
            self._chan.resume_reading()  # may deliver data, and so pump, right here

    def _flush(self) -> None:
        out = self.out
        if out:
            data = b"".join(out)
            out.clear()
            self.out_bytes = 0
            if not self._chan.is_closing():
                self._chan.write(data)

    def _serve(self, payload: bytes) -> None:
        handler = self._handler
        assert handler is not None
        packet = SSHPacket(payload)
        try:
            pkttype = packet.get_byte()
            pktid = packet.get_uint32()
        except PacketDecodeError as exc:
            self._end(SFTPBadMessage(str(exc)))
            return
        if SSHLogger._debug_level >= _PACKET_DEBUG_LEVEL:
            handler.log_received_packet(pkttype, pktid, packet)
        elif pkttype == FXP_READ and self._answer_read(handler, pktid, payload):
            return
        coro = handler._process_packet(pkttype, pktid, packet)
        if self._inline(pkttype):
            try:
                first = self._ctx.run(coro.send, None)
            except StopIteration:
                return  # answered
            task = self._loop.create_task(_continue(coro, first), context=self._ctx)
        else:
            task = self._loop.create_task(coro, context=self._ctx)
        self._busy = True
        task.add_done_callback(self._served)

    def _answer_read(self, handler: InlineHandler, pktid: int, payload: bytes) -> bool:
        """Answer a read of an open download at once; False: let asyncssh's dispatch do it."""
        read_now = self._read_now
        if read_now is None or handler._version != 3 or len(payload) < 9:
            return False
        hlen = int.from_bytes(payload[5:9], "big")
        if len(payload) != 9 + hlen + 12:
            return False  # malformed, or more than a v3 read: asyncssh says what is wrong
        file_obj = handler._file_handles.get(payload[9 : 9 + hlen])
        if file_obj is None:
            return False
        offset = int.from_bytes(payload[9 + hlen : 17 + hlen], "big")
        length = int.from_bytes(payload[17 + hlen :], "big")
        try:
            data = read_now(file_obj, offset, length)
        except SFTPError as exc:
            handler.send_packet(FXP_STATUS, pktid, UInt32(pktid), exc.encode(3))
            return True
        if data is None:
            return False
        if not data:
            handler.send_packet(FXP_STATUS, pktid, UInt32(pktid), SFTPEOFError().encode(3))
            return True
        out = self.out
        if out is None or self._chan.is_closing():
            return False
        size = len(data)
        out.append(UInt32(9 + size) + _DATA + UInt32(pktid) + UInt32(size))
        out.append(data)
        self.out_bytes += 13 + size
        return True

    def _served(self, task: asyncio.Task[None]) -> None:
        """A request that had to wait is done: serve those received meanwhile."""
        if self._ended:
            return
        self._busy = False
        if task.cancelled():
            self._end(None)
            return
        exc = task.exception()
        if exc is not None:
            self._end(exc)
            return
        self._pump()

    def _end(self, exc: BaseException | None) -> None:
        """The session is over: asyncssh's clean-up closes the handles and the channel."""
        if self._ended or self._handler is None:
            return
        self._ended = self._busy = True
        self._chunks.clear()
        self._have = 0
        handler = self._handler
        error = exc if isinstance(exc, Exception) else None
        self._conn.create_task(
            self._loop.create_task(handler._cleanup(error), context=self._ctx), handler.logger
        )
