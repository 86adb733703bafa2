"""Spreading SFTP connections evenly over the worker processes.

With one SO_REUSEPORT socket per worker the kernel picks the worker by a hash of
the connection's addresses and ports, blind to load: four sessions of one client
land 3 + 1 or 4 + 0 on two workers in five batches of eight, and then one core does
most of the work while the other idles. So with workers the first process alone
listens for SFTP (one plain socket per address, as with one process) and hands each
accepted connection to the process with the fewest open SFTP connections, itself
included (``Dispatcher``). The socket travels over a Unix socket pair made before the
workers start (``socket.send_fds``); a worker serves what it receives
(``Receiver``) and answers one byte when such a connection has closed, so the first
process counts every process's open connections itself.

A worker that dies closes its end of the pair: the first process reads end of file,
or fails to send, and hands it nothing more (its connections die with it, as
before). Ties go round, so an idle server still spreads a burst of logins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Serves an accepted connection until it closes.
Serve = Callable[[socket.socket], Awaitable[None]]

# One message per handed socket, one per closed connection; a message is one byte.
_HANDED = b"c"
_CLOSED = b"-"


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """The pair between the first process and one worker: the first process keeps
    the first end, the worker gets the second. Sequenced packets keep each handed
    socket a message of its own."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class Spread(Protocol):
    """Where a process's SFTP connections come from when there are workers."""

    @property
    def port(self) -> int: ...

    def start(self, serve: Serve) -> None:
        """Start passing connections to ``serve`` (on the running loop)."""

    def close(self) -> None:
        """Take no more connections; those being served go on."""

    async def wait_closed(self) -> None:
        """Until every connection passed to ``serve`` has ended (cancelling the wait
        leaves them be)."""


class _Tasks:
    """The serving tasks of one side, referenced until done."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def wait(self) -> None:
        while self.running:
            await asyncio.wait(set(self.running))


async def _serve_one(serve: Serve, sock: socket.socket) -> None:
    try:
        await serve(sock)
    except Exception:
        log.exception("serving a connection failed")
        sock.close()


def _closing(sock: socket.socket) -> Callable[[asyncio.Task[None]], None]:
    return lambda _: sock.close()


class _Worker:
    """The first process's view of one other worker."""

    def __init__(self, number: int, pair: socket.socket) -> None:
        self.number = number
        self.pair = pair
        self.open = 0
        self.alive = True


class Dispatcher:
    """The first process: accepts on ``listening`` and hands each connection to the
    process with the fewest open ones (``pairs``: its ends of the workers' pairs)."""

    def __init__(self, listening: Sequence[socket.socket], pairs: Sequence[socket.socket]) -> None:
        self._listening = list(listening)
        self._workers = [_Worker(i, pair) for i, pair in enumerate(pairs, 1)]
        self._here = 0  # open connections this process serves
        self._turn = 0
        self._accepting: list[asyncio.Task[None]] = []
        self._tasks = _Tasks()

    @property
    def port(self) -> int:
        return int(self._listening[0].getsockname()[1])

    def open_connections(self) -> list[int]:
        """Open connections per process, this one first (dead workers count 0)."""
        return [self._here] + [w.open if w.alive else 0 for w in self._workers]

    def start(self, serve: Serve) -> None:
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            worker.pair.setblocking(False)
            loop.add_reader(worker.pair.fileno(), self._closed, worker)
        for sock in self._listening:
            sock.setblocking(False)
            self._accepting.append(
                asyncio.create_task(self._accept(sock, serve), name="sftp-accept")
            )

    async def _accept(self, sock: socket.socket, serve: Serve) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                # Out of descriptors (EMFILE) or a connection reset before accept:
                # the listener goes on, as asyncio's own does.
                log.warning("accepting an SFTP connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self._hand(conn, serve)

    def _hand(self, conn: socket.socket, serve: Serve) -> None:
        # Rotated before the choice: among equally loaded processes each gets its turn.
        choices: list[_Worker | None] = [None, *(w for w in self._workers if w.alive)]
        self._turn = (self._turn + 1) % len(choices)
        choices = choices[self._turn :] + choices[: self._turn]
        choices.sort(key=lambda w: self._here if w is None else w.open)
        for worker in choices:
            if worker is None:
                self._here += 1
                self._tasks.spawn(self._serve_here(serve, conn))
                return
            try:
                socket.send_fds(worker.pair, [_HANDED], [conn.fileno()])
            except BlockingIOError:
                continue  # its queue is full: the next one takes it
            except OSError:
                self._lost(worker)
                continue
            worker.open += 1
            conn.close()  # the worker holds its own descriptor now
            return

    async def _serve_here(self, serve: Serve, conn: socket.socket) -> None:
        try:
            await _serve_one(serve, conn)
        finally:
            self._here -= 1

    def _closed(self, worker: _Worker) -> None:
        while True:
            try:
                message = worker.pair.recv(16)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._lost(worker)
                return
            worker.open = max(0, worker.open - 1)

    def _lost(self, worker: _Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        asyncio.get_running_loop().remove_reader(worker.pair.fileno())
        worker.pair.close()
        log.warning(
            "worker %d is gone: its %d SFTP connection(s) ended with it, it gets no new ones",
            worker.number,
            worker.open,
        )

    def close(self) -> None:
        for task, sock in zip(self._accepting, self._listening, strict=True):
            # Closed once the accept has let go of it (it is still registered with
            # the loop until the cancellation is through).
            task.add_done_callback(_closing(sock))
            task.cancel()
        self._accepting = []

    async def wait_closed(self) -> None:
        await self._tasks.wait()


class Receiver:
    """A worker: serves the connections the first process hands over ``pair``."""

    def __init__(self, pair: socket.socket, port: int) -> None:
        self._pair = pair
        self._port = port
        self._serve: Serve | None = None
        self._tasks = _Tasks()

    @property
    def port(self) -> int:
        return self._port

    def start(self, serve: Serve) -> None:
        self._serve = serve
        self._pair.setblocking(False)
        asyncio.get_running_loop().add_reader(self._pair.fileno(), self._received)

    def _received(self) -> None:
        assert self._serve is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self._pair, 16, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            for fd in fds:
                self._tasks.spawn(self._serve_handed(self._serve, socket.socket(fileno=fd)))
            if not message and not fds:
                log.info("the first process takes no more SFTP connections for this worker")
                self.close()
                return

    async def _serve_handed(self, serve: Serve, sock: socket.socket) -> None:
        try:
            await _serve_one(serve, sock)
        finally:
            # Unless the first process is gone or closing: then nobody counts any more.
            with contextlib.suppress(OSError):
                self._pair.send(_CLOSED)

    def close(self) -> None:
        if self._serve is not None and self._pair.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._pair.fileno())
        self._serve = None

    async def wait_closed(self) -> None:
        await self._tasks.wait()
