"""The SSH listener: authentication by IK, connection tracking, timeouts, shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from qprserver import audit
from qprserver.audit import Actor
from qprserver.blobstore import FileBlobStore
from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.db.models import Account
from qprserver.passwords import verify_password
from qprserver.sftp.handles import UploadHandle
from qprserver.sftp.receipts import ReceiptRecorder
from qprserver.sftp.session import MailboxSFTPServer
from qprserver.uploads import UploadService

log = logging.getLogger(__name__)


@dataclass
class ServerContext:
    """Everything a session needs, made once per server process."""

    settings: Settings
    db: Database
    blobs: FileBlobStore
    uploads: UploadService
    receipts: ReceiptRecorder
    clock: Clock = field(default_factory=SystemClock)


@dataclass(eq=False)
class ConnectionState:
    """Per-connection state: who logged in, activity, uploads in flight."""

    peer: str
    account: Account | None = None
    authenticated: bool = False
    lost: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    pending: dict[str, UploadHandle] = field(default_factory=dict)
    uploads: set[UploadHandle] = field(default_factory=set)
    open_files: int = 0

    def touch(self) -> None:
        self.last_activity = time.monotonic()


class AccountSSHServer(asyncssh.SSHServer):
    """Authenticates an IK's account by SSH key or password."""

    def __init__(self, ctx: ServerContext, listener: SFTPListener) -> None:
        self.ctx = ctx
        self.listener = listener
        self.conn: Any = None
        self.state = ConnectionState(peer="")

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.state.peer = f"{peer[0]}:{peer[1]}"
        self.listener.connections[conn] = self.state

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.lost = True
        for handle in list(self.state.uploads) + list(self.state.pending.values()):
            handle.writer.abort()
        self.state.uploads.clear()
        self.state.pending.clear()
        self.listener.connections.pop(self.conn, None)

    async def begin_auth(self, username: str) -> bool:
        self.state.touch()
        if len(username) == 9 and username.isascii() and username.isdigit():
            async with self.ctx.db.read_session() as session:
                self.state.account = await session.scalar(
                    select(Account)
                    .where(Account.ik == username)
                    .options(selectinload(Account.keys), selectinload(Account.password))
                )
        return True

    def _usable(self) -> Account | None:
        account = self.state.account
        if account is None or not account.active:
            return None
        return account

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: Any) -> bool:
        account = self._usable()
        if account is None:
            return False
        fingerprint = key.get_fingerprint("sha256")
        return any(k.fingerprint == fingerprint for k in account.keys)

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        account = self._usable()
        stored = account.password.password_hash if account and account.password else None
        # Same work whether or not the account exists or has a password.
        ok = await asyncio.to_thread(verify_password, stored, password)
        return ok and account is not None

    def auth_completed(self) -> None:
        self.state.authenticated = True
        self.state.touch()


class SFTPListener:
    """A running SFTP server: start, serve, and stop gracefully."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.connections: dict[Any, ConnectionState] = {}
        self._acceptor: Any = None
        self._idle_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self._acceptor.get_port())

    async def start(self, *, reuse_port: bool = False) -> None:
        server = self.ctx.settings.server
        self.ctx.receipts.start()
        self._acceptor = await asyncssh.create_server(
            lambda: AccountSSHServer(self.ctx, self),
            server.host,
            server.port,
            server_host_keys=[str(p) for p in server.host_keys],
            sftp_factory=self._sftp_factory,
            allow_scp=True,
            encryption_algs=server.ciphers,
            mac_algs=server.macs,
            kex_algs=server.kex,
            login_timeout=server.login_timeout,
            keepalive_interval=60,
            keepalive_count_max=3,
            reuse_port=reuse_port,
            server_version="qprserver",
        )
        self._idle_task = asyncio.create_task(self._close_idle(), name="idle-sessions")

    def _sftp_factory(self, chan: Any) -> MailboxSFTPServer:
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, AccountSSHServer) and owner.state.account is not None
        task = asyncio.create_task(audit_login(self.ctx, owner.state.account, owner.state.peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
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

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let transfers finish for up to grace seconds, then close all."""
        if self._acceptor is None:
            return
        grace = self.ctx.settings.server.shutdown_grace if grace is None else grace
        self._acceptor.close()
        deadline = time.monotonic() + grace
        # Transfers in flight may finish; new requests on open sessions still work.
        while time.monotonic() < deadline:
            if not any(state.open_files for state in self.connections.values()):
                break
            await asyncio.sleep(0.1)
        for conn in list(self.connections):
            conn.disconnect(asyncssh.DISC_BY_APPLICATION, "server shutting down")
        for conn in list(self.connections):
            await conn.wait_closed()
        await self._acceptor.wait_closed()
        if self._idle_task is not None:
            self._idle_task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ctx.receipts.stop()
        self._acceptor = None


async def audit_login(ctx: ServerContext, account: Account, peer: str) -> None:
    """Record a login; a failure to record is logged, never fatal to the session."""
    try:
        async with ctx.db.session() as session:
            await audit.record(
                session, Actor(account.ik, peer), "login", at=ctx.clock.now(), target=account.ik
            )
    except Exception:
        log.exception("recording the login of %s failed", account.ik)
