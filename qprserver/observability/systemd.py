"""systemd's notify protocol (``Type=notify``), in the few lines it takes.

A datagram of ``KEY=value`` lines to the socket named in ``NOTIFY_SOCKET`` (a path,
or an abstract name starting with ``@``): ``READY=1`` once serving, ``WATCHDOG=1``
at half the ``WatchdogSec`` interval from the event loop (a stuck loop stops it, and
systemd restarts the service), ``STOPPING=1`` at shutdown, ``STATUS=`` for
``systemctl status``. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from qprserver.config import ServiceEnvironment

log = logging.getLogger(__name__)


class ServiceManager:
    """Tells systemd how this service stands."""

    def __init__(self, environment: ServiceEnvironment) -> None:
        address = environment.notify_socket
        # An abstract socket's name starts with a NUL byte where systemd writes "@".
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog = environment.watchdog_usec / 1_000_000

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=value`` lines (``ready=1`` becomes ``READY=1``); False when not
        run under systemd or the message could not be sent."""
        if not self._address:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            log.warning("telling systemd %s failed: %s", message.split("\n")[0], exc)
            return False
        return True

    async def watchdog(self, status: Callable[[], Awaitable[str]]) -> None:
        """Ping the watchdog at half its interval and refresh ``STATUS``; runs until
        cancelled. Without a watchdog the status is still refreshed every 30 s."""
        interval = self._watchdog / 2 if self._watchdog else 30.0
        while True:
            if self._watchdog:
                self.notify(watchdog=1)
            try:
                # Bounded: a slow database must not hold back the next ping.
                text = await asyncio.wait_for(status(), interval / 2)
            except Exception as exc:
                text = f"status unavailable ({type(exc).__name__})"
            self.notify(status=text)
            await asyncio.sleep(interval / 2)
