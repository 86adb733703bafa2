"""Two factors over SSH: the one place that reaches into asyncssh's private auth API.

OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` answers a verified
first factor with a USERAUTH_FAILURE carrying *partial success*, and then asks for
the second factor. asyncssh's server never sends partial success, so this module
replaces its publickey and password handlers with subclasses whose ``send_success``
asks the connection's owner whether authentication is complete. If the owner says
a second factor is still needed, the client gets a partial-success failure instead,
and the methods offered next are re-read from the owner's ``*_auth_supported`` hooks
(only keyboard-interactive by then).

``send_success`` of the publickey handler runs only after asyncssh has verified the
signature, so "first factor done" is never decided on the unsigned probe.

A client may ask for the ``ssh-userauth`` service again before every method it tries:
paramiko does so in each ``auth_*`` call, so its ``auth_publickey`` followed by
``auth_interactive`` sends a second SERVICE_REQUEST after the partial success.
OpenSSH's sshd accepts that request until login completes; asyncssh accepts it once
and disconnects with "Unexpected service in service request". ``install`` therefore
also gives server connections a service-request handler that accepts ``ssh-userauth``
again while authentication is in progress and leaves every other case to asyncssh.

The host keys go through here too: asyncssh offers every algorithm a key can sign
with (an RSA key also ``ssh-rsa``, i.e. SHA-1, and four ssh.com variants) and has no
server option to narrow that. ``host_keys`` loads the key pairs and narrows their
``host_key_algorithms``, the undocumented attribute asyncssh builds its offer from.

This depends on private names of asyncssh (``asyncssh.auth._server_auth_handlers``,
``_ServerPublicKeyAuth``, ``_ServerPasswordAuth``, ``SSHConnection._packet_handlers``
the connection's ``_next_service``, ``_auth_in_progress``, ``_auth_complete``, and
``SSHKeyPair.host_key_algorithms``)
as of the versions in
``TESTED_VERSIONS``; so does ``session.py``, which recognises asyncssh's clean-up of a
dead session (``SFTPServerHandler._cleanup``, the channel's receive state). ``install``
refuses any other version, and ``tests/functional/test_security.py`` fails if an
upgrade changes the behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncssh
from asyncssh import auth as _auth
from asyncssh import connection as _connection
from asyncssh.constants import MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.packet import String

from qprserver.errors import ConfigError

TESTED_VERSIONS = ("2.24.1",)
METHODS = (b"publickey", b"password")


class FirstFactorOwner(Protocol):
    """What the SSHServer of a connection tells about a verified first factor."""

    def first_factor_verified(self, method: str) -> bool:
        """Record the verified factor; True when login is complete, False for partial."""
        ...


def _two_step(base: type[Any]) -> type[Any]:
    class TwoStep(base):  # type: ignore[misc]
        async def send_success(self) -> None:
            owner = self._conn.get_owner()
            check = getattr(owner, "first_factor_verified", None)
            if check is not None and not check(self._method.decode("ascii")):
                self.send_failure(partial_success=True)
                return
            await super().send_success()

    TwoStep.__name__ = TwoStep.__qualname__ = f"TwoStep{base.__name__}"
    return TwoStep


_USERAUTH = b"ssh-userauth"
_ORIGINAL_SERVICE_REQUEST = _connection.SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]


def _service_request(conn: Any, pkttype: int, pktid: int, packet: Any) -> None:
    """Accept ``ssh-userauth`` again until login completes, as OpenSSH's sshd does."""
    if conn._next_service is None and conn._auth_in_progress and not conn._auth_complete:
        service = packet.get_string()
        packet.check_end()
        if service != _USERAUTH:
            raise asyncssh.ServiceNotAvailable("Unexpected service in service request")
        conn.send_packet(MSG_SERVICE_ACCEPT, String(service))
        return
    _ORIGINAL_SERVICE_REQUEST(conn, pkttype, pktid, packet)


_INSTALLED: dict[bytes, type[Any]] = {}


def install() -> None:
    """Replace asyncssh's server auth handlers and service-request handler (idempotent)."""
    if asyncssh.__version__ not in TESTED_VERSIONS:
        raise RuntimeError(
            f"asyncssh {asyncssh.__version__} is not a version the two-factor login was "
            f"tested with ({', '.join(TESTED_VERSIONS)}); check qprserver/sftp/twofactor.py"
        )
    originals = {
        b"publickey": _auth._ServerPublicKeyAuth,
        b"password": _auth._ServerPasswordAuth,
    }
    for method, base in originals.items():
        if method not in _INSTALLED:
            _INSTALLED[method] = _two_step(base)
        _auth._server_auth_handlers[method] = _INSTALLED[method]
    # Server connections only: the class-level table is shared with clients.
    server = _connection.SSHServerConnection
    server._packet_handlers = {
        **_connection.SSHConnection._packet_handlers,
        MSG_SERVICE_REQUEST: _service_request,
    }


def host_keys(paths: Sequence[Path], algorithms: Sequence[str]) -> list[Any]:
    """The host key pairs, each offering only ``algorithms`` (in that order)."""
    allowed = [name.encode("ascii") for name in algorithms]
    pairs = []
    for pair in asyncssh.load_keypairs([str(p) for p in paths]):
        offered = [alg for alg in allowed if alg in pair.host_key_algorithms]
        if offered:
            pair.host_key_algorithms = offered
            pairs.append(pair)
    if not pairs:
        raise ConfigError(
            "server.host_keys: no key signs with any algorithm of server.host_key_algs"
        )
    return pairs


def installed() -> bool:
    """True when asyncssh uses the two-step handlers (a test checks this after upgrades)."""
    handlers = _connection.SSHServerConnection._packet_handlers
    return (
        all(_auth._server_auth_handlers.get(m) is _INSTALLED.get(m) for m in METHODS)
        and handlers.get(MSG_SERVICE_REQUEST) is _service_request
        and _connection.SSHConnection._packet_handlers[MSG_SERVICE_REQUEST]
        is _ORIGINAL_SERVICE_REQUEST
    )
