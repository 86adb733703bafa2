"""No empty MSG_IGNORE before every packet: the other private asyncssh hook.

asyncssh 2.24 sends an empty ``SSH_MSG_IGNORE`` in front of every packet once
encryption is on (``SSHConnection.send_packet``): an old countermeasure against
the CBC-mode attacks on SSH. qprserver offers only AES-GCM and AES-CTR, where it
protects nothing, and it doubles the packets this server encrypts and writes: two
per SFTP reply. OpenSSH sends none.

``install`` replaces ``send_packet`` on one server connection only (the instance,
not the class) with a wrapper that drops exactly those empty ignore packets; every
other packet goes through unchanged. It relies on asyncssh's own recursive call,
so it holds for the versions ``twofactor.py`` accepts (the server refuses to start
with others), and ``tests/functional/test_sftp_mailbox.py`` counts the packets a
client receives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

_EMPTY = String(b"")


def install(conn: Any) -> None:
    """Drop asyncssh's per-packet empty ignore on this connection."""
    send: Callable[..., None] = conn.send_packet

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY,):
            return
        send(pkttype, *args, handler=handler)

    conn.send_packet = send_packet
