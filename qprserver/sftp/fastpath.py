"""The bytes of a download on their way out: channel data packets with fewer copies.

Part of the private-API rule of ``compat.py`` (same version gate, installed by
``compat.install``): this module replaces the one loop of asyncssh where channel
data becomes SSH packets, because that loop is where a download spends its time.

asyncssh 2.24.1 copies every byte of an SFTP read reply about a dozen times on its
way to the socket. From the channel's send buffer (``SSHChannel._flush_send_buf``)
on: the slice of one packet's worth, ``String(data)``, ``Byte(pkttype) + join``, the
padding concatenation, AES-GCM's output sliced into ciphertext and tag and joined
again with the header, then ``packet + mac``. Each copy of a 32 KiB packet costs
about 1.2 µs here, the AES-GCM key object built anew for every packet another
7.5 µs (the cached one encrypts 32 KiB in 13.6 µs instead of 21.1 µs).

``flush_send_buf`` does what asyncssh's loop does (same window and packet size
bookkeeping, same EOF and close handling; ``test_sftp_compat.py`` pins the source
of the loop it replaces) and builds each data packet with one join straight from a
view of the send buffer, encrypts it with the connection's cipher object (AES-GCM
with the key object kept on the cipher, or a CTR/CBC cipher with
encrypt-then-MAC HMAC, fed in parts) and hands header, ciphertext and tag to the
connection's ``_send`` (which ``compat.coalesce_writes`` gathers into one write).
Anything else — no encryption yet, a key exchange due or running, compression,
another cipher or MAC, packet logging (asyncssh debug level 3) — goes through
asyncssh's own ``send_packet``, unchanged. The bytes on the wire are the same either
way (a test decrypts both).

The other direction, an upload's bytes on their way in: asyncssh keeps what the
socket delivered in one ``bytes`` (``SSHConnection._inpbuf``) and each step of its
receive loop (``_recv_pkthdr``, then ``_recv_packet``) slices off what it used and
keeps the rest as a new ``bytes``. A read of 256 KiB holds about eight 32 KiB
packets, so the rest is copied twice per packet: about 2 MiB copied per 256 KiB
received. ``recv_data`` replaces asyncssh's ``_recv_data`` loop (its source pinned
by a test like the send loop's) and hands each step exactly the bytes it needs, a
view of the received bytes when the connection decrypts with AES-GCM (whose
``decrypt_packet`` here joins ciphertext and tag once), a slice of them otherwise;
the steps themselves, their checks and what they dispatch to are asyncssh's.
Anything but those two steps (the version line, a packet whose handler still runs)
gets the rest of the bytes through asyncssh's own loop.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from asyncssh import channel as _channel
from asyncssh import connection as _connection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA
from asyncssh.crypto.cipher import BasicCipher, GCMCipher
from asyncssh.encryption import ETMEncryption, GCMEncryption
from asyncssh.logging import SSHLogger
from asyncssh.mac import _HMAC
from asyncssh.misc import DisconnectError
from asyncssh.packet import String, UInt32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# asyncssh's own loops, as imported (``compat.install`` replaces them; tests pin their source).
ASYNCSSH_FLUSH = _channel.SSHChannel.__dict__["_flush_send_buf"]
ASYNCSSH_RECV_DATA = _connection.SSHConnection.__dict__["_recv_data"]
# The two steps of asyncssh's receive loop that ``recv_data`` feeds (not replaced).
_RECV_PKTHDR = _connection.SSHConnection.__dict__["_recv_pkthdr"]
_RECV_PACKET = _connection.SSHConnection.__dict__["_recv_packet"]

_AEAD = "_qpr_aead"
_CHANNEL_DATA = bytes((MSG_CHANNEL_DATA,))
_GCM_TAG = 16


def _aead(cipher: Any) -> AESGCM:
    """The AES-GCM key object of one direction's cipher, made once per key."""
    aead: AESGCM | None = getattr(cipher, _AEAD, None)
    if aead is None:
        aead = AESGCM(cipher._key)
        setattr(cipher, _AEAD, aead)
    return aead


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    # asyncssh's GCMCipher.encrypt_and_sign with the key object kept.
    sealed = _aead(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + sealed[:-_GCM_TAG], sealed[-_GCM_TAG:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    # asyncssh's GCMCipher.verify_and_decrypt with the key object kept.
    try:
        plain: bytes | None = _aead(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:  # asyncssh answers None, then disconnects with a MAC error
        plain = None
    self._update_iv()
    return plain


def _gcm_decrypt_packet(
    self: Any, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
) -> bytes | None:
    # asyncssh's GCMEncryption.decrypt_packet: ciphertext and tag joined once, not twice.
    cipher = self._cipher
    try:
        plain: bytes | None = _aead(cipher).decrypt(
            cipher._iv, b"".join((memoryview(first)[header_len:], rest, mac)), first[:header_len]
        )
    except InvalidTag:  # asyncssh answers None, then disconnects with a MAC error
        plain = None
    cipher._update_iv()
    return plain


def install_cached_gcm_keys() -> None:
    """Keep AES-GCM's key object per direction instead of building it per packet;
    uploads decrypt through it with one join of ciphertext and tag."""
    GCMCipher.encrypt_and_sign = _gcm_encrypt_and_sign  # type: ignore[method-assign]
    GCMCipher.verify_and_decrypt = _gcm_verify_and_decrypt  # type: ignore[method-assign]
    GCMEncryption.decrypt_packet = _gcm_decrypt_packet  # type: ignore[method-assign]


def _rekey_due(conn: Any) -> bool:
    # The condition at the top of asyncssh's SSHConnection.send_packet.
    return bool(
        conn._rekey_bytes_sent >= conn._rekey_bytes
        or (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
    )


def _fast_kind(conn: Any) -> int:
    """0: asyncssh's own path; 1: AES-GCM; 2: encrypt-then-MAC with HMAC."""
    encryption = conn._send_encryption
    if (
        encryption is None
        or conn._compressor is not None
        or not (conn._kex_complete and conn._auth_complete)
        or SSHLogger._debug_level >= 3
        or _rekey_due(conn)
    ):
        return 0
    if type(encryption) is GCMEncryption and type(encryption._cipher) is GCMCipher:
        return 1
    if (
        type(encryption) is ETMEncryption
        and type(encryption._cipher) is BasicCipher
        and type(encryption._mac) is _HMAC
    ):
        return 2
    return 0


def _send_data(conn: Any, kind: int, recipient: bytes, chunk: memoryview) -> None:
    """One MSG_CHANNEL_DATA packet, built as asyncssh's ``send_packet`` builds it."""
    size = len(chunk)
    payload_len = 9 + size  # type byte, recipient channel, string length, data
    padlen = -(conn._send_enchdrlen + payload_len) % conn._send_blocksize
    if padlen < 4:
        padlen += conn._send_blocksize
    pktlen = 1 + payload_len + padlen
    header = UInt32(pktlen)
    plain = b"".join(
        (bytes((padlen,)), _CHANNEL_DATA, recipient, UInt32(size), chunk, os.urandom(padlen))
    )
    seq = conn._send_seq
    encryption = conn._send_encryption
    send = conn._send
    if kind == 1:
        cipher = encryption._cipher
        sealed = _aead(cipher).encrypt(cipher._iv, plain, header)
        cipher._update_iv()
        send(header)
        send(sealed)
    else:
        sealed = encryption._cipher.encrypt(plain)
        mac = encryption._mac
        signer = hmac.new(mac._key, UInt32(seq), mac._hash_alg)
        signer.update(header)
        signer.update(sealed)
        send(header)
        send(sealed)
        send(signer.digest()[: mac._hash_size])
    conn._send_seq = (seq + 1) & 0xFFFFFFFF
    conn._rekey_bytes_sent += pktlen


def flush_send_buf(channel: Any) -> None:
    """asyncssh's ``SSHChannel._flush_send_buf``, with data packets built by
    ``_send_data`` when the connection's cipher allows it."""
    conn = channel._conn
    send_buf = channel._send_buf
    while send_buf and channel._send_window:
        pktsize = min(channel._send_window, channel._send_pktsize)
        buf, datatype = send_buf[0]
        size = min(len(buf), pktsize)
        kind = _fast_kind(conn) if datatype is None and channel._send_chan is not None else 0
        if kind:
            with memoryview(buf) as view, view[:size] as chunk:
                _send_data(conn, kind, UInt32(channel._send_chan), chunk)
        else:
            data = bytes(buf[:size])
            if datatype is None:
                channel.send_packet(MSG_CHANNEL_DATA, String(data))
            else:
                channel.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(data))
        if size == len(buf):
            del send_buf[0]
        else:
            del buf[:size]
        channel._send_buf_len -= size
        channel._send_window -= size

    channel._pause_resume_writing()

    if not send_buf:
        if channel._send_state == "eof_pending":
            channel.send_packet(MSG_CHANNEL_EOF)
            channel._send_state = "eof"
        elif channel._send_state == "close_pending":
            channel._close_send()


def _step_size(conn: Any) -> int:
    """The bytes the connection's next receive step takes; 0 for a step of its own."""
    step = getattr(conn._recv_handler, "__func__", None)
    if step is _RECV_PKTHDR:
        return int(conn._recv_blocksize)
    if step is _RECV_PACKET:
        return int(4 + conn._pktlen + conn._recv_macsize - conn._recv_blocksize)
    return 0  # the version line, or a packet's handler still running (``lambda: False``)


def _feed(conn: Any) -> None:
    buf: bytes = conn._inpbuf
    end = len(buf)
    pos = 0
    view: memoryview | None = None
    gcm = installed()
    try:
        while pos < end:
            need = _step_size(conn)
            if not need or end - pos < need:
                break
            if gcm and type(conn._recv_encryption) is GCMEncryption:
                if view is None:
                    view = memoryview(buf)
                conn._inpbuf = view[pos : pos + need]
            else:
                conn._inpbuf = buf[pos : pos + need]
            pos += need
            done = conn._recv_handler()
            if conn._transport is None:
                # Closed meanwhile: nothing more is read (asyncssh's clean-up drops it too).
                conn._inpbuf = b""
                return
            if not done or conn._inpbuf:
                # A packet's handler runs as a task: asyncssh goes on from ``_inpbuf``
                # once it is done (``_finish_recv_packet``).
                conn._inpbuf = bytes(conn._inpbuf) + buf[pos:]
                return
    except BaseException:
        conn._inpbuf = b""  # the connection is closed for it (``recv_data``)
        raise
    conn._inpbuf = buf[pos:]
    if pos < end and not _step_size(conn):
        # Steps of asyncssh's own (the version line): its loop, as in ``_recv_data``,
        # then on from the first packet.
        while conn._inpbuf and not _step_size(conn) and conn._recv_handler():
            pass
        if conn._inpbuf and _step_size(conn) and conn._transport is not None:
            _feed(conn)


def recv_data(conn: Any) -> None:
    """asyncssh's ``SSHConnection._recv_data``, handing each receive step its own bytes."""
    conn._reset_keepalive_timer()
    try:
        _feed(conn)
    except DisconnectError as exc:
        conn._send_disconnect(exc.code, exc.reason, exc.lang)
        conn._force_close(exc)
    except Exception:
        conn.internal_error()


def install_receive_loop() -> None:
    """Replace asyncssh's receive loop by ``recv_data`` (idempotent)."""
    _connection.SSHConnection._recv_data = recv_data  # type: ignore[method-assign,assignment]


def installed() -> bool:
    """True when AES-GCM keeps its key objects (the send loop is ``compat``'s to check)."""
    return (
        GCMCipher.encrypt_and_sign is _gcm_encrypt_and_sign
        and GCMEncryption.decrypt_packet is _gcm_decrypt_packet
    )
