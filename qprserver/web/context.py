"""What the portal's requests share: the server process's parts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings
from qprserver.db.engine import Database
from qprserver.exchange.uploads import UploadService
from qprserver.storage.base import BlobStore

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from qprserver.notify.outbox import Notifier

# Each argon2id check holds 64 MiB while it runs (as on the SSH edge): a flood of
# password attempts queues here.
PASSWORD_CHECKS_AT_ONCE = 2


@dataclass
class Portal:
    """The parts of a server process the portal uses (built by ``service.py``)."""

    settings: Settings
    db: Database
    blobs: BlobStore
    uploads: UploadService
    clock: Clock = field(default_factory=SystemClock)
    # The instance's TOTP key; without one nobody can log in here (two factors always).
    totp_key: Fernet | None = None
    password_checks: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(PASSWORD_CHECKS_AT_ONCE)
    )

    @property
    def notifier(self) -> Notifier:
        """The process's one notifier (the upload service was built with it)."""
        return self.uploads.notifier
