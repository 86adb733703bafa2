"""Shared plumbing of the CLI: settings, coroutines, errors (printing: ``output.py``).

Imported by every command module, so it imports only click and light stdlib modules at
the top; the database, Rich and the notifier come in when a command uses them.
``App.notifier`` is the CLI's composition root for mail: the one ``Notifier`` every
command that changes something passes to the domain.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import click

from qprserver.clock import Clock, SystemClock
from qprserver.errors import QprError

if TYPE_CHECKING:
    from qprserver.audit.chain import Actor
    from qprserver.config import Settings
    from qprserver.db.engine import Database
    from qprserver.notify.outbox import Notifier

T = TypeVar("T")


@dataclass
class App:
    """What every command needs; settings are read on first use."""

    config: str | None
    clock: Clock = field(default_factory=SystemClock)
    _settings: Settings | None = None
    _notifier: Notifier | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from qprserver.config import load_config

            self._settings = load_config(self.config)
        return self._settings

    def notifier(self) -> Notifier:
        """Queues mails for the changes an operator makes (one per command run)."""
        if self._notifier is None:
            from qprserver.notify.outbox import Notifier

            self._notifier = Notifier(self.settings.mail)
        return self._notifier

    def actor(self) -> Actor:
        """The operator at this terminal, as the audit log names them."""
        from qprserver.audit.chain import Actor

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return Actor("cli", f"{user}@{socket.gethostname()}")

    def run(self, work: Callable[[Database], Awaitable[T]], *, migrated: bool = True) -> T:
        """Run work against the database; domain errors become one-line CLI errors."""
        from qprserver.audit import seal as audit_seal
        from qprserver.db.engine import Database
        from qprserver.db.migrate import require_head

        async def main() -> T:
            db = Database(
                self.settings.database,
                audit_key=audit_seal.load_key(self.settings.security.audit_key),
            )
            try:
                if migrated:
                    await require_head(db)
                return await work(db)
            finally:
                await db.dispose()

        try:
            return asyncio.run(main())
        except QprError as exc:
            raise click.ClickException(str(exc)) from None


pass_app = click.make_pass_decorator(App)


def handle_errors(func: Callable[[], T]) -> T:
    """Call func and turn domain errors into a one-line CLI error."""
    try:
        return func()
    except QprError as exc:
        raise click.ClickException(str(exc)) from None
