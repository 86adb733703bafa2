"""The portal's listener: uvicorn on sockets bound by ``serve``, in its event loop.

``WebListener.start`` runs ``uvicorn.Server.serve`` as a task beside the SSH server,
so both share one loop, one database pool and one blob store. HTTPS with the
configured certificate; plain HTTP only on a loopback address behind
``web.trusted_proxies``, whose ``X-Forwarded-For``/``-Proto`` uvicorn then believes
(nobody else's).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn

from qprserver.config import WebSettings
from qprserver.errors import StartupError
from qprserver.web.app import create_app
from qprserver.web.context import Portal

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check(web: WebSettings) -> None:
    """Refuse a configuration that would serve logins in clear text."""
    if web.tls_cert is None and not (_loopback(web.host) and web.trusted_proxies):
        raise StartupError(
            "web: without tls_cert/tls_key the portal listens only on a loopback address "
            "behind a reverse proxy named in web.trusted_proxies"
        )
    if web.tls_cert is not None and web.tls_key is not None:
        for path in (web.tls_cert, web.tls_key):
            if not path.is_file():
                raise StartupError(f"{path}: web certificate or key missing; run `qprserver init`")


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: ``serve`` owns SIGTERM and SIGINT
    for the whole process (uvicorn's would replace the event loop's)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebListener:
    """A running portal: start on bound sockets, stop gracefully."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, sockets: Sequence[socket.socket]) -> None:
        web = self.portal.settings.web
        check(web)
        config = uvicorn.Config(
            create_app(self.portal),
            ssl_certfile=str(web.tls_cert) if web.tls_cert else None,
            ssl_keyfile=str(web.tls_key) if web.tls_key else None,
            proxy_headers=bool(web.trusted_proxies),
            forwarded_allow_ips=list(web.trusted_proxies) or None,
            server_header=False,
            date_header=True,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=round(self.portal.settings.server.shutdown_grace),
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=list(sockets)), name="web")
        while not server.started:
            if self._task.done():
                await self._task
                raise StartupError("web: the portal did not start")
            await asyncio.sleep(0.01)
        self.port = sockets[0].getsockname()[1] if sockets else 0
        scheme = "https" if web.tls_cert else "http"
        log.info("web portal on %s://%s:%d/", scheme, web.host, self.port)

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
