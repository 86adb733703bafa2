"""The SSH listener: connection tracking, timeouts, bans, shutdown.

At start it loads the TOTP key (an unusable one stops the start) and joins the
``nodes`` table; a refresh loop re-reads bans and account states and writes the
node's heartbeat, which keeps this process's login sessions counting.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncssh

from qprserver.accounts import access, sessions
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.engine import Reads
from qprserver.security import bans
from qprserver.sftp import compat
from qprserver.sftp.auth import AccountSSHServer
from qprserver.sftp.session import MailboxSFTPServer
from qprserver.sftp.spread import Spread
from qprserver.sftp.state import ConnectionState, ServerContext

__all__ = ["ConnectionState", "SFTPListener", "ServerContext"]

log = logging.getLogger(__name__)

# How often shared state (bans, disabled accounts) is re-read from the database;
# every few rounds the node's heartbeat is written too (``accounts/sessions.py``).
REFRESH_SECONDS = 2.0


PASSWORD_CHECKS_AT_ONCE = 2


class SFTPListener:
    """A running SFTP server: start, serve, and stop gracefully."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.connections: dict[Any, ConnectionState] = {}
        self._acceptors: list[Any] = []
        self._spread: Spread | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.banned_addresses: set[str] = set()
        # Each argon2id check holds 64 MiB while it runs: a flood of password
        # attempts queues here instead of growing the process by that much per try.
        self.password_checks = asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine beside the sessions, keeping it referenced until done."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def port(self) -> int:
        if self._spread is not None:
            return self._spread.port
        return int(self._acceptors[0].get_port())

    async def start(
        self, sockets: Sequence[socket.socket] = (), spread: Spread | None = None
    ) -> None:
        """Serve on ``sockets`` (bound and listening already), or the connections
        ``spread`` passes (with workers), or bind ``server.host``/``server.port`` here
        when neither is given."""
        server = self.ctx.settings.server
        compat.install()
        await self.ctx.load_totp_key()
        await self.ctx.node.join()
        await self._refresh()
        self.ctx.receipts.start()
        options: dict[str, Any] = dict(
            server_host_keys=compat.host_keys(server.host_keys, server.host_key_algs),
            # No sftp_factory: asyncssh then asks ``AccountSSHServer.session_requested``
            # for each session, which serves SFTP and scp (``compat.sftp_session``).
            # No terminal sessions here: without the line editor each channel write
            # goes straight to the channel.
            line_editor=False,
            kbdint_auth=True,
            encryption_algs=server.ciphers,
            mac_algs=server.macs,
            kex_algs=server.kex,
            signature_algs=server.signature_algs,
            compression_algs=server.compression,
            login_timeout=server.login_timeout,
            keepalive_interval=60,
            keepalive_count_max=3,
            server_version="qprserver",
        )

        def factory() -> AccountSSHServer:
            return AccountSSHServer(self.ctx, self)

        if spread is not None:
            make = await compat.accepted_connection_factory(factory, **options)

            async def serve(sock: socket.socket) -> None:
                loop = asyncio.get_running_loop()
                _, conn = await loop.connect_accepted_socket(make, sock)
                await conn.wait_closed()  # type: ignore[attr-defined]

            self._spread = spread
            spread.start(serve)
        elif not sockets:
            self._acceptors = [
                await asyncssh.create_server(factory, server.host, server.port, **options)
            ]
        for sock in sockets:
            self._acceptors.append(await asyncssh.create_server(factory, sock=sock, **options))
        self._idle_task = asyncio.create_task(self._close_idle(), name="idle-sessions")
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="refresh")

    async def _refresh(self) -> None:
        """Re-read bans and close sessions of accounts the login policy no longer
        admits (disabled, expired or removed, on any node)."""
        now = self.ctx.clock.now()
        ids = {s.account.id for s in self.connections.values() if s.account is not None}

        async def work(reads: Reads) -> tuple[set[str], set[int]]:
            return await bans.banned_addresses(reads, now), await access.revoked(reads, ids, now)

        self.banned_addresses, gone = await self.ctx.db.quick_read(work)
        for conn, state in list(self.connections.items()):
            if state.account is not None and state.account.id in gone:
                log.info("closing session of %s: account disabled or expired", state.account.login)
                conn.disconnect(asyncssh.DISC_BY_APPLICATION, "account disabled")

    async def _refresh_loop(self) -> None:
        beats = max(1, round(sessions.HEARTBEAT_SECONDS / REFRESH_SECONDS))
        rounds = 0
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            rounds += 1
            try:
                if rounds % beats == 0:
                    await self.ctx.node.beat()
                await self._refresh()
            except Exception:
                log.exception("refreshing bans and account states failed")

    def sftp_factory(self, chan: Any) -> MailboxSFTPServer:
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, AccountSSHServer) and owner.state.account is not None
        account = owner.state.account
        self.ctx.receipts.add(
            audit.Event(
                Actor(account.login, owner.state.peer), "login", self.ctx.clock.now(), account.login
            )
        )
        return MailboxSFTPServer(chan, self.ctx, owner.state)

    async def _close_idle(self) -> None:
        timeout = self.ctx.settings.server.idle_timeout
        while True:
            await asyncio.sleep(min(timeout / 4, 30.0))
            now = time.monotonic()
            for conn, state in list(self.connections.items()):
                if now - state.last_activity > timeout and not state.open_files:
                    log.info("closing idle connection from %s", state.peer)
                    conn.disconnect(asyncssh.DISC_BY_APPLICATION, "idle timeout")

    async def _close_all(self) -> None:
        for conn in list(self.connections):
            conn.disconnect(asyncssh.DISC_BY_APPLICATION, "server shutting down")
        for conn in list(self.connections):
            await conn.wait_closed()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let transfers finish for up to grace seconds, then close all."""
        if not self._acceptors and self._spread is None:
            return
        grace = self.ctx.settings.server.shutdown_grace if grace is None else grace
        for acceptor in self._acceptors:
            acceptor.close()
        if self._spread is not None:
            self._spread.close()
        deadline = time.monotonic() + grace
        # Transfers in flight may finish; new requests on open sessions still work.
        while time.monotonic() < deadline:
            if not any(state.open_files for state in self.connections.values()):
                break
            await asyncio.sleep(0.1)
        await self._close_all()
        for acceptor in self._acceptors:
            await acceptor.wait_closed()
        # A connection handed over just before the close may have begun after that.
        while self._spread is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self._spread.wait_closed()
                break
            except TimeoutError:
                await self._close_all()
        for task in (self._idle_task, self._refresh_task):
            if task is not None:
                task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ctx.receipts.stop()
        await self.ctx.node.leave()
        self._acceptors = []
        self._spread = None
