"""What the SFTP edge keeps: the server process's parts and each connection's state."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from qprserver.accounts.sessions import NodeLease
from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account
from qprserver.errors import ConfigError
from qprserver.exchange.uploads import UploadService
from qprserver.observability.logs import new_id
from qprserver.sftp.receipts import ReceiptRecorder
from qprserver.storage.base import BlobStore

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from qprserver.accounts.access import Decision, Failure, Refusal
    from qprserver.sftp.handles import UploadHandle

log = logging.getLogger(__name__)

_ENROLLED = select(func.count(Account.id)).where(Account.totp_secret.is_not(None))


class SessionCount:
    """The SFTP and scp sessions open in this process; one can wait until none is.

    A session ends only after asyncssh closed its handles (and so settled what they
    read), also for a client that dropped without closing them.
    """

    def __init__(self) -> None:
        self.open = 0
        self._none = asyncio.Event()
        self._none.set()

    def opened(self) -> None:
        self.open += 1
        self._none.clear()

    def ended(self) -> None:
        self.open = max(0, self.open - 1)
        if not self.open:
            self._none.set()

    async def none_open(self) -> None:
        await self._none.wait()


@dataclass
class ServerContext:
    """Everything a session needs, made once per server process."""

    settings: Settings
    db: Database
    blobs: BlobStore
    uploads: UploadService
    receipts: ReceiptRecorder
    clock: Clock = field(default_factory=SystemClock)
    sessions: SessionCount = field(default_factory=SessionCount)
    # The key of the TOTP secrets, set by ``load_totp_key`` at start; None when the
    # instance has none (then no account can give a second factor).
    totp_key: Fernet | None = None
    # This process as a node: heartbeat and login sessions (``accounts/sessions.py``).
    node: NodeLease = field(init=False)

    def __post_init__(self) -> None:
        self.node = NodeLease(self.db, self.clock, self.settings.server.node_id)

    async def load_totp_key(self) -> None:
        """Load the TOTP key at start; raise ConfigError when it cannot be used.

        A missing file is fine while no account has a second factor (logins that need
        one are refused, with a warning each). A missing file while accounts are
        enrolled, an unreadable file or one that holds no valid key stop the start
        with one line naming the file: guessing on would refuse those accounts'
        logins with nothing but "Permission denied" to go on.
        """
        from qprserver.security.totp import load_key

        path = self.settings.security.totp_key
        try:
            present = path.exists()
        except OSError as exc:
            raise ConfigError(f"{path}: TOTP key unreadable ({exc.strerror})") from None
        if not present:

            async def work(reads: Reads) -> int:
                return int(await reads.scalar(_ENROLLED) or 0)

            enrolled = await self.db.quick_read(work)
            if enrolled:
                raise ConfigError(
                    f"{path}: TOTP key missing, but {enrolled} account(s) have a second "
                    "factor encrypted with it; restore the file"
                )
            log.info("no TOTP key at %s and no account enrolled: no second factors", path)
            self.totp_key = None
            return
        try:
            self.totp_key = load_key(path)
        except OSError as exc:
            raise ConfigError(f"{path}: TOTP key unreadable ({exc.strerror})") from None


@dataclass(eq=False)
class ConnectionState:
    """Per-connection state: who logs in, how far, activity, uploads in flight."""

    peer: str
    address: str = ""
    # Ties this connection's log lines together (``session`` in every event).
    session: str = field(default_factory=new_id)
    # The user name when it is a login name, an IK or <IK>-<Standort> (anything else
    # may be a mistyped secret).
    login: str | None = None
    # The factor tried last (``publickey``, ``password``) and why the login fails
    # so far: what ``access.report`` tells when the connection ends unauthenticated.
    method: str = "none"
    failure: Refusal | Failure | None = None
    account: Account | None = None
    # What the login policy said about ``account`` from this address (``begin_auth``).
    access: Decision | None = None
    # The row of this login in ``login_sessions`` once authenticated.
    login_session: int | None = None
    # Counted in the node's memory since login completed (until close).
    reserved: bool = False
    authenticated: bool = False
    first_factor: str | None = None
    # Password and code guesses for this account are stopped (an account ban); keys still work.
    secrets_locked: bool = False
    auth_failures: int = 0
    scored: int = 0
    lost: bool = False
    last_activity: float = field(default_factory=time.monotonic)
    pending: dict[str, UploadHandle] = field(default_factory=dict)
    uploads: set[UploadHandle] = field(default_factory=set)
    open_files: int = 0

    def touch(self) -> None:
        self.last_activity = time.monotonic()
