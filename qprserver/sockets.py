"""Listening sockets for the server's listeners (SFTP, portal), bound once per node.

One plain socket per address finds a taken port with a one-line error; with several
worker processes the portal's port gives each its own SO_REUSEPORT socket on the same
port, so the kernel spreads connections over them while the port is never free in
between. (SFTP binds for one process: the first process hands its connections on,
``sftp/spread.py``.)
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from qprserver.errors import StartupError

# Connections the kernel queues on a listening socket (asyncio's default, as before).
ACCEPT_QUEUE = 100


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"


def listening_sockets(host: str, port: int, processes: int = 1) -> list[list[socket.socket]]:
    """Bind ``host:port`` (every address it resolves to) once: one list of listening
    sockets for each of ``processes`` server processes.

    First a plain socket listens on each address: that fails, with one line, when
    anything holds the port, a second qprserver instance included. For several
    processes it then lets each process's own SO_REUSEPORT socket join it, so the
    kernel spreads the connections evenly, and closes it. The port is never free in
    between, so another instance (another config, another database) cannot slip in
    and take a share of the logins.
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"{_address(host, port)}: Adresse unbekannt ({exc.strerror})") from None
    plain: list[socket.socket] = []
    shared: list[list[socket.socket]] = [[] for _ in range(processes)]
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = _listening(family, kind, proto, (address[0], port, *address[2:]))
            plain.append(sock)
            port = sock.getsockname()[1]  # port 0 (tests): the others take the same
        if processes == 1:
            return [plain]
        for sock in plain:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            for own in shared:
                own.append(_listening(sock.family, sock.type, sock.proto, sock.getsockname(), True))
    except OSError as exc:
        for sock in plain + [s for own in shared for s in own]:
            sock.close()
        where = _address(host, port)
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"{where} ist bereits belegt ({exc.strerror})") from None
        raise StartupError(f"{where} kann nicht geöffnet werden ({exc.strerror})") from None
    for sock in plain:
        sock.close()
    return shared


def _listening(
    family: int, kind: int, proto: int, address: Any, reuse_port: bool = False
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        # A restart may bind while connections of the last run linger in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(ACCEPT_QUEUE)
    except OSError:
        sock.close()
        raise
    return sock
