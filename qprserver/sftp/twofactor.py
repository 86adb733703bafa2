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

This depends on private names of asyncssh (``asyncssh.auth._server_auth_handlers``,
``_ServerPublicKeyAuth``, ``_ServerPasswordAuth``) as of the versions in
``TESTED_VERSIONS``; so does ``session.py``, which recognises asyncssh's clean-up of a
dead session (``SFTPServerHandler._cleanup``, the channel's receive state). ``install``
refuses any other version, and ``tests/functional/test_security.py`` fails if an
upgrade changes the behaviour.
"""

from __future__ import annotations

from typing import Any, Protocol

import asyncssh
from asyncssh import auth as _auth

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


_INSTALLED: dict[bytes, type[Any]] = {}


def install() -> None:
    """Replace asyncssh's server publickey and password handlers (idempotent)."""
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


def installed() -> bool:
    """True when asyncssh uses the two-step handlers (a test checks this after upgrades)."""
    return all(_auth._server_auth_handlers.get(m) is _INSTALLED.get(m) for m in METHODS)
