"""What the SFTP edge keeps: the server process's parts and each connection's state."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet

from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.exchange.uploads import UploadService
from qprserver.sftp.receipts import ReceiptRecorder
from qprserver.storage.base import BlobStore

if TYPE_CHECKING:
    from qprserver.db.models import Account
    from qprserver.sftp.handles import UploadHandle


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

    @cached_property
    def totp_key(self) -> Fernet | None:
        """The key of the TOTP secrets; None when missing (2FA logins then fail)."""
        from qprserver.security.totp import load_key

        try:
            return load_key(self.settings.security.totp_key)
        except Exception:
            return None


@dataclass(eq=False)
class ConnectionState:
    """Per-connection state: who logs in, how far, activity, uploads in flight."""

    peer: str
    address: str = ""
    account: Account | None = None
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
