"""The data packets of ``sftp/fastpath.py`` decrypt, as asyncssh's own would, to the
payload asyncssh builds; the loop it replaces is the one it was written against.

A stand-in connection holds what ``_send_data`` reads (real asyncssh encryption
objects made with ``get_encryption``, sequence numbers, block sizes); the receiving
side is asyncssh's own ``decrypt_header``/``decrypt_packet`` with the same keys.
End to end, every client test in tests/functional/ downloads through this path.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.encryption import get_encryption
from asyncssh.packet import Byte, String, UInt32

from qprserver.sftp import fastpath

# asyncssh 2.24.1's SSHChannel._flush_send_buf; a change means fastpath.flush_send_buf
# must be compared with the new loop before the hash is updated.
ASYNCSSH_FLUSH_SHA256 = "3f11e9dc27c58b18847c12007b945cb36c7767def131c9b96b0c0a81a8b72dbc"


@dataclass
class StandIn:
    """What ``_send_data`` and ``_fast_kind`` read of an SSH connection."""

    _send_encryption: Any
    _send_enchdrlen: int
    _send_blocksize: int
    _compressor: Any = None
    _kex_complete: bool = True
    _auth_complete: bool = True
    _rekey_bytes_sent: int = 0
    _rekey_bytes: int = 1 << 30
    _rekey_seconds: float = 3600.0
    _rekey_time: float = float("inf")
    _send_seq: int = 7
    sent: list[bytes] = field(default_factory=list)

    def _send(self, data: bytes) -> None:
        self.sent.append(bytes(data))


CASES = {
    "aes128-gcm": (b"aes128-gcm@openssh.com", 16, 12, b"", 0, False, 1),
    "aes256-gcm": (b"aes256-gcm@openssh.com", 32, 12, b"", 0, False, 1),
    "aes128-ctr+hmac-sha2-256-etm": (
        b"aes128-ctr",
        16,
        16,
        b"hmac-sha2-256-etm@openssh.com",
        32,
        True,
        2,
    ),
    "aes256-ctr+hmac-sha2-512-etm": (
        b"aes256-ctr",
        32,
        16,
        b"hmac-sha2-512-etm@openssh.com",
        64,
        True,
        2,
    ),
}


def _pair(case: str) -> tuple[StandIn, Any, int, int]:
    alg, key_size, iv_size, mac_alg, mac_key_size, etm, kind = CASES[case]
    key, iv, mac_key = os.urandom(key_size), os.urandom(iv_size), os.urandom(mac_key_size)
    sender = get_encryption(alg, key, iv, mac_alg, mac_key, etm)
    receiver = get_encryption(alg, key, iv, mac_alg, mac_key, etm)
    blocksize = 16
    conn = StandIn(
        sender, _send_enchdrlen=1 if (etm or kind == 1) else 5, _send_blocksize=blocksize
    )
    mac_size = 16 if kind == 1 else mac_key_size
    return conn, receiver, kind, mac_size


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("size", [1, 15, 16, 4093, 32768])
def test_a_fast_data_packet_decrypts_to_asyncssh_payload(case: str, size: int) -> None:
    conn, receiver, kind, mac_size = _pair(case)
    assert fastpath._fast_kind(conn) == kind
    for round_ in range(3):  # consecutive packets: IVs, counters and sequence numbers move on
        data = os.urandom(size)
        seq = conn._send_seq
        conn.sent.clear()
        with memoryview(bytearray(data)) as chunk:
            fastpath._send_data(conn, kind, UInt32(42), chunk)
        wire = b"".join(conn.sent)
        assert conn._send_seq == seq + 1
        header, body, mac = wire[:4], wire[4:-mac_size], wire[-mac_size:]
        pktlen = int.from_bytes(header, "big")
        assert pktlen == len(body)
        assert pktlen % 16 == 0, "padding fills whole cipher blocks"
        _, decrypted_header = receiver.decrypt_header(seq, header, 4)
        assert int.from_bytes(decrypted_header, "big") == pktlen
        plain = receiver.decrypt_packet(seq, header, body, 4, mac)
        assert plain is not None, f"round {round_}: the tag or MAC did not verify"
        padlen = plain[0]
        assert 4 <= padlen < 4 + 16
        payload = plain[1 : len(plain) - padlen]
        assert payload == Byte(MSG_CHANNEL_DATA) + UInt32(42) + String(data)


def test_sent_bytes_count_towards_the_rekey_limit_as_asyncssh_counts_them() -> None:
    conn, _receiver, kind, _mac = _pair("aes128-gcm")
    with memoryview(bytearray(100)) as chunk:
        fastpath._send_data(conn, kind, UInt32(1), chunk)
    # 1 padding-length byte + 9 payload header bytes + 100 data = 110, then the
    # smallest padding of at least 4 bytes that ends on a 16-byte block: 18.
    assert conn._rekey_bytes_sent == 128


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"_compressor": object()}, "compression"),
        ({"_kex_complete": False}, "a key exchange running"),
        ({"_auth_complete": False}, "before the login"),
        ({"_rekey_bytes_sent": 1 << 30}, "the rekey byte limit reached"),
        ({"_rekey_time": 0.0}, "the rekey time reached"),
        ({"_send_encryption": None}, "no encryption yet"),
    ],
)
def test_everything_else_goes_through_asyncssh_send_packet(
    change: dict[str, Any], why: str
) -> None:
    conn, _receiver, _kind, _mac = _pair("aes128-gcm")
    for name, value in change.items():
        setattr(conn, name, value)
    assert fastpath._fast_kind(conn) == 0, why


def test_a_chacha_connection_keeps_asyncssh_send_packet() -> None:
    encryption = get_encryption(b"chacha20-poly1305@openssh.com", os.urandom(64), b"")
    assert fastpath._fast_kind(StandIn(encryption, 1, 8)) == 0


def test_the_replaced_loop_is_the_one_this_module_was_written_against() -> None:
    source = inspect.getsource(fastpath.ASYNCSSH_FLUSH)
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert digest == ASYNCSSH_FLUSH_SHA256, (
        "asyncssh's SSHChannel._flush_send_buf changed: compare it with "
        "fastpath.flush_send_buf, then update the hash"
    )


def test_aes_gcm_keeps_one_key_object_per_cipher() -> None:
    fastpath.install_cached_gcm_keys()
    conn, receiver, _kind, _mac = _pair("aes128-gcm")
    header = UInt32(32)
    sealed, tag = conn._send_encryption.encrypt_packet(0, header, bytes(32))
    first = fastpath._aead(conn._send_encryption._cipher)
    conn._send_encryption.encrypt_packet(1, header, bytes(32))
    assert fastpath._aead(conn._send_encryption._cipher) is first
    assert receiver.decrypt_packet(0, sealed[:4], sealed[4:], 4, tag) == bytes(32)
    assert receiver.decrypt_packet(1, header, bytes(32), 4, bytes(16)) is None, "a bad tag fails"
