"""The data packets of ``sftp/fastpath.py`` decrypt, as asyncssh's own would, to the
payload asyncssh builds; the loop it replaces is the one it was written against.

A stand-in connection holds what ``_send_data`` reads (real asyncssh encryption
objects made with ``get_encryption``, sequence numbers, block sizes); the receiving
side is asyncssh's own ``decrypt_header``/``decrypt_packet`` with the same keys.
End to end, every client test in tests/functional/ downloads through this path.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from asyncssh import connection as _connection
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


# -- the receive loop ----------------------------------------------------------------

# asyncssh 2.24.1's SSHConnection._recv_data (replaced) and the two steps it feeds
# (kept, but ``recv_data`` relies on how many bytes each takes from ``_inpbuf``).
ASYNCSSH_RECEIVE_SHA256 = {
    "_recv_data": "fc4e0735191bb0fdd7fa8f91761067015989bfa47246ac1843c9abaeef7d243f",
    "_recv_pkthdr": "7adc4d88fe20593cef39c00322547733a2d81f0aed40924e6105d5f57aa2a820",
    "_recv_packet": "b3daa22e9763eee9f3ec710d1469c1b54c8df5066bae3e65b66bdf1db8063c8b",
}


class Channel:
    """Records the packets asyncssh's ``_recv_packet`` hands to channel 42."""

    def __init__(self, owner: Receiver) -> None:
        self.owner = owner
        self.got: list[tuple[int, int, bytes]] = []
        self.run_later: set[int] = set()  # sequence numbers handled by a task

    def log_received_packet(self, *args: Any) -> None:
        """asyncssh's packet logging hook: nothing to record here."""

    def process_packet(self, pkttype: int, seq: int, packet: Any) -> Any:
        self.got.append((pkttype, seq, bytes(packet.get_remaining_payload())))
        if seq in self.run_later:

            async def later() -> None:
                await asyncio.sleep(0)

            return later()
        return True


class Receiver:
    """What asyncssh's receive steps read of an SSH connection, with its real steps."""

    _recv_pkthdr = _connection.SSHConnection._recv_pkthdr
    _recv_packet = _connection.SSHConnection._recv_packet
    _finish_recv_packet = _connection.SSHConnection._finish_recv_packet

    def __init__(self, encryption: Any, macsize: int, loop: Callable[[Any], None]) -> None:
        self._loop_func = loop
        self._recv_encryption = encryption
        self._recv_macsize = macsize
        self._recv_blocksize = 16
        self._recv_seq = 7
        self._max_recv_pktlen = 1 << 20
        self._inpbuf: Any = b""
        self._packet: Any = b""
        self._pktlen = 0
        self._decompressor = None
        self._decompress_after_auth = False
        self._auth_complete = True
        self._auth_final = False
        self._kex = None
        self._auth = None
        self._strict_kex = False
        self._transport: Any = object()
        self._recv_handler = self._recv_pkthdr
        self.channel = Channel(self)
        self._channels = {42: self.channel}
        self.errors: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    def _recv_data(self) -> None:
        self._loop_func(self)

    def _reset_keepalive_timer(self) -> None:
        """The receive loop calls it per read; this stand-in has no timer."""

    def data_received(self, data: bytes) -> None:
        self._inpbuf += data  # as asyncssh's data_received
        self._recv_data()

    def create_task(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    def internal_error(self) -> None:
        self.errors.append("internal error")

    def _send_disconnect(self, code: int, reason: str, lang: str) -> None:
        self.errors.append(reason)

    def _force_close(self, exc: Exception) -> None:
        self._transport = None


def _wire(case: str, sizes: list[int]) -> tuple[bytes, Callable[[], tuple[Any, int]]]:
    """Data packets for channel 42 as sent, and a maker of matching receivers."""
    alg, key_size, iv_size, mac_alg, mac_key_size, etm, kind = CASES[case]
    key, iv, mac_key = os.urandom(key_size), os.urandom(iv_size), os.urandom(mac_key_size)
    sender = StandIn(
        get_encryption(alg, key, iv, mac_alg, mac_key, etm),
        _send_enchdrlen=1 if (etm or kind == 1) else 5,
        _send_blocksize=16,
    )
    for size in sizes:
        with memoryview(bytearray(os.urandom(size))) as chunk:
            fastpath._send_data(sender, kind, UInt32(42), chunk)

    def receiver() -> tuple[Any, int]:
        return get_encryption(
            alg, key, iv, mac_alg, mac_key, etm
        ), 16 if kind == 1 else mac_key_size

    return b"".join(sender.sent), receiver


def _pieces(wire: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(wire):
        n = rng.choice([1, 7, 16, 100, 4096, 65536, 262144])
        pieces.append(wire[pos : pos + n])
        pos += n
    return pieces


@pytest.mark.parametrize("case", ["aes128-gcm", "aes128-ctr+hmac-sha2-256-etm"])
@pytest.mark.parametrize("seed", range(4))
def test_the_receive_loop_hands_asyncssh_the_same_packets(case: str, seed: int) -> None:
    fastpath.install_cached_gcm_keys()  # AES-GCM takes views only with its decrypt_packet
    sizes = [32768, 1, 15, 4093, 32768, 32768, 100_000, 0, 32768] * 3
    wire, receiver = _wire(case, sizes)
    theirs = Receiver(*receiver(), loop=fastpath.ASYNCSSH_RECV_DATA)
    ours = Receiver(*receiver(), loop=fastpath.recv_data)
    for piece in _pieces(wire, seed):
        theirs.data_received(piece)
        ours.data_received(piece)
        assert isinstance(ours._inpbuf, bytes), "asyncssh's data_received appends to bytes"
    assert not theirs.errors and not ours.errors
    assert len(theirs.channel.got) == len(sizes)
    assert ours.channel.got == theirs.channel.got
    assert ours._recv_seq == theirs._recv_seq == 7 + len(sizes)
    assert ours._inpbuf == b""


async def test_the_receive_loop_waits_for_a_handler_running_as_a_task() -> None:
    fastpath.install_cached_gcm_keys()
    sizes = [32768, 32768, 32768, 1000]
    wire, receiver = _wire("aes128-gcm", sizes)
    ours = Receiver(*receiver(), loop=fastpath.recv_data)
    ours.channel.run_later = {8}  # the second packet
    ours.data_received(wire)
    assert len(ours.channel.got) == 2, "nothing after the packet whose handler runs"
    assert isinstance(ours._inpbuf, bytes)
    assert ours._inpbuf, "the rest waits in asyncssh's buffer"
    await asyncio.gather(*ours.tasks)
    assert [seq for _type, seq, _data in ours.channel.got] == [7, 8, 9, 10]
    assert ours._inpbuf == b""


def test_a_bad_tag_disconnects_as_asyncssh_does() -> None:
    fastpath.install_cached_gcm_keys()
    wire, receiver = _wire("aes128-gcm", [32768, 32768])
    ours = Receiver(*receiver(), loop=fastpath.recv_data)
    broken = bytearray(wire)
    broken[100] ^= 1
    ours.data_received(bytes(broken))
    assert ours.errors == ["MAC verification failed"]
    assert ours.channel.got == []
    assert ours._transport is None


def test_the_replaced_receive_loop_is_the_one_this_module_was_written_against() -> None:
    for name, expected in ASYNCSSH_RECEIVE_SHA256.items():
        step = _connection.SSHConnection.__dict__[name]
        if name == "_recv_data":
            step = fastpath.ASYNCSSH_RECV_DATA  # asyncssh's, also once installed
        source = inspect.getsource(step)
        assert hashlib.sha256(source.encode()).hexdigest() == expected, (
            f"asyncssh's SSHConnection.{name} changed: compare it with fastpath.recv_data, "
            "then update the hash"
        )
