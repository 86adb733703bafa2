"""The operations listener: ``/metrics``, ``/healthz`` and ``/readyz`` over plain HTTP.

A few lines of asyncio rather than a web framework: three GET routes, one short
request per connection (Prometheus, a load balancer, ``qprserver status``). It runs
in one process of ``serve`` on its own address (``[metrics]``), never on the SFTP or
the portal port, and serves what every worker counted (``metrics``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from qprserver.config import MetricsSettings
from qprserver.errors import StartupError
from qprserver.observability.health import Readiness

log = logging.getLogger(__name__)

# Prometheus' text format.
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
READ_TIMEOUT = 10.0
MAX_HEAD = 8192

Render = Callable[[], Awaitable[bytes]]
Ready = Callable[[], Awaitable[Readiness]]


class OpsListener:
    """Serves the routes until ``stop``."""

    def __init__(self, settings: MetricsSettings, metrics: Render, ready: Ready) -> None:
        self.settings = settings
        self._metrics = metrics
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; StartupError with one line when the address cannot be bound."""
        host, port = self.settings.host, self.settings.port
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise StartupError(
                f"[metrics] {host}:{port} kann nicht geöffnet werden ({exc.strerror})"
            ) from None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            status, kind, body = await self._answer(head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, kind, body = "400 Bad Request", "text/plain", b"bad request\n"
        except Exception:
            log.exception("answering an operations request failed")
            status, kind, body = "500 Internal Server Error", "text/plain", b"error\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass  # the scraper went away; nothing to tell it
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        if len(head) > MAX_HEAD:
            return "431 Request Header Fields Too Large", "text/plain", b"too large\n"
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == b"/metrics":
            return "200 OK", METRICS_TYPE, await self._metrics()
        if path == b"/healthz":
            return "200 OK", "application/json", b'{"status": "alive"}\n'
        if path == b"/readyz":
            ready = await self._ready()
            body = json.dumps(ready.as_json()).encode() + b"\n"
            return (
                ("200 OK" if ready.ready else "503 Service Unavailable"),
                "application/json",
                body,
            )
        return "404 Not Found", "text/plain", b"not found\n"
