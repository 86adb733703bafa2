"""Client protocol faults the server tolerates, as OpenSSH's sftp-server does.

**Trailing bytes after an SSH_FXP_WRITE's data.** github.com/pkg/sftp before v1.13.6
(rclone up to 1.61, e.g. Debian 12's rclone 1.60.1) sends the last, short chunk of an
upload (``File.ReadFromWithConcurrency``) with the right data length but with the
whole unused rest of its 32 KiB buffer behind it, and a packet length that counts it.
The minimal reproduction is one request (numbers as rclone sends them for a
40,000-byte file)::

    uint32 32793            packet length: 1 + 4 + 8 + 8 + 4 + 32768
    byte   6                SSH_FXP_WRITE
    uint32 6                request id
    string "\\0\\0\\0\\0"       handle
    uint64 32768            offset
    string 7232 bytes       data: the file's last 7,232 bytes
    25,536 bytes            the rest of the client's buffer (stale data)

OpenSSH's sftp-server ignores whatever a request leaves unread. asyncssh checks that
the packet ends with the data (``SSHPacket.check_end``) and answers
SSH_FX_BAD_MESSAGE "Unexpected data at end of packet", so every rclone upload whose
size is not a multiple of 32 KiB failed (and rclone then removes the file). Fixed
upstream in pkg/sftp commit 8add055 ("Stop ReadFromWithConcurrency sending more data
than it needs to", v1.13.6).

Here the server's FXP_WRITE handler is wrapped: when a write request is longer than
its fields say, the tail is cut off before asyncssh decodes it; all other writes pass
through untouched (no copy). The handler table is private to asyncssh, so ``install``
refuses any version other than those in ``twofactor.TESTED_VERSIONS``, and
``tests/functional/test_sftp_compat.py`` fails when an upgrade changes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
from asyncssh.constants import FXP_WRITE
from asyncssh.packet import SSHPacket
from asyncssh.sftp import SFTPServerHandler

from qprserver.sftp.twofactor import TESTED_VERSIONS

_Handler = Callable[[Any, SSHPacket], Awaitable[Any]]

_original: _Handler | None = None


def trimmed_write(packet: SSHPacket) -> SSHPacket:
    """The write request without bytes beyond its data string; ``packet`` itself if none."""
    full = packet.get_full_payload()
    start = len(packet.get_consumed_payload())
    pos = start
    # handle (string), offset (uint64), data (string): the fields asyncssh reads.
    if pos + 4 > len(full):
        return packet
    pos += 4 + int.from_bytes(full[pos : pos + 4], "big") + 8
    if pos + 4 > len(full):
        return packet
    end = pos + 4 + int.from_bytes(full[pos : pos + 4], "big")
    if end >= len(full):
        return packet  # exact, or too short: asyncssh reports the latter itself
    return SSHPacket(full[start:end])


async def _lenient_write(handler: Any, packet: SSHPacket) -> Any:
    assert _original is not None
    return await _original(handler, trimmed_write(packet))


def install() -> None:
    """Let the server's FXP_WRITE handler ignore trailing bytes (idempotent)."""
    global _original
    if asyncssh.__version__ not in TESTED_VERSIONS:
        raise RuntimeError(
            f"asyncssh {asyncssh.__version__} is not a version the SFTP write fix was "
            f"tested with ({', '.join(TESTED_VERSIONS)}); check qprserver/sftp/compat.py"
        )
    handlers: dict[Any, _Handler] = SFTPServerHandler._packet_handlers  # type: ignore[assignment]
    current = handlers[FXP_WRITE]
    if current is not _lenient_write:
        _original = current
        handlers[FXP_WRITE] = _lenient_write


def installed() -> bool:
    """True when asyncssh's server uses the lenient write handler."""
    handlers: dict[Any, _Handler] = SFTPServerHandler._packet_handlers  # type: ignore[assignment]
    return handlers.get(FXP_WRITE) is _lenient_write
