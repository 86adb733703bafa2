"""What the server offers in its KEXINIT, read off a real connection, and what it refuses."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from qprserver.db.engine import Database
from qprserver.security.hostkeys import ensure_host_key
from tests.functional.harness import LV_NW, Server, make_settings, start_server

KEXINIT = 20
FIELDS = (
    "kex",
    "host_key",
    "ciphers_ctos",
    "ciphers_stoc",
    "macs_ctos",
    "macs_stoc",
    "compression_ctos",
    "compression_stoc",
)


async def read_kexinit(port: int) -> dict[str, list[str]]:
    """The server's algorithm lists, as its first (unencrypted) packet states them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"SSH-2.0-kexinit-reader\r\n")
        while not (await reader.readline()).startswith(b"SSH-"):
            pass  # lines before the server's version string carry nothing
        length = struct.unpack(">I", await reader.readexactly(4))[0]
        packet = await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
    padding, payload = packet[0], packet[1 : length - packet[0]]
    assert padding >= 4 and payload[0] == KEXINIT
    lists: dict[str, list[str]] = {}
    offset = 1 + 16  # message type, cookie
    for name in FIELDS:
        size = struct.unpack(">I", payload[offset : offset + 4])[0]
        text = payload[offset + 4 : offset + 4 + size].decode("ascii")
        lists[name] = text.split(",") if text else []
        offset += 4 + size
    return lists


@pytest.fixture
async def rsa_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    """A server with an Ed25519 and an RSA host key and the default algorithm settings."""
    settings = make_settings(tmp_path, db.settings.url, db.settings.schema_name)
    rsa = tmp_path / "keys" / "ssh_host_rsa_key"
    ensure_host_key(rsa)
    server = settings.server.model_copy(update={"host_keys": [*settings.server.host_keys, rsa]})
    srv = await start_server(settings.model_copy(update={"server": server}), db, tmp_path)
    await srv.add_account(LV_NW, ["recipient"])
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


async def test_the_server_offers_no_sha1_signature_no_compression_and_a_post_quantum_kex(
    rsa_server: Server,
) -> None:
    offered = await read_kexinit(rsa_server.port)
    assert offered["host_key"] == ["ssh-ed25519", "rsa-sha2-512", "rsa-sha2-256"]
    assert offered["compression_ctos"] == offered["compression_stoc"] == ["none"]
    assert offered["kex"] == [
        "mlkem768x25519-sha256",
        "mlkem768nistp256-sha256",
        "mlkem1024nistp384-sha384",
        "curve25519-sha256",
        "curve25519-sha256@libssh.org",
        "ecdh-sha2-nistp256",
        "ecdh-sha2-nistp384",
        "ecdh-sha2-nistp521",
        "diffie-hellman-group16-sha512",
        "diffie-hellman-group18-sha512",
        "diffie-hellman-group14-sha256",
        "ext-info-s",
        "kex-strict-s-v00@openssh.com",  # strict key exchange (Terrapin)
    ]
    ciphers = [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    ]
    assert offered["ciphers_ctos"] == offered["ciphers_stoc"] == ciphers
    macs = [
        "hmac-sha2-256-etm@openssh.com",
        "hmac-sha2-512-etm@openssh.com",
        "hmac-sha2-256",  # for libssh2 < 1.11 (curl on Debian 12): no ETM, no GCM
        "hmac-sha2-512",
    ]
    assert offered["macs_ctos"] == offered["macs_stoc"] == macs


async def test_a_client_logs_in_over_the_ml_kem_hybrid_and_the_rsa_key_signs_with_sha2(
    rsa_server: Server,
) -> None:
    async with (
        rsa_server.connect(
            LV_NW, kex_algs=["mlkem768x25519-sha256"], server_host_key_algs=["rsa-sha2-256"]
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        assert "inbox" in await sftp.listdir("/")


@pytest.mark.parametrize(
    "option",
    [
        {"server_host_key_algs": ["ssh-rsa"]},
        {"compression_algs": ["zlib@openssh.com"]},
        {"mac_algs": ["hmac-sha1"], "encryption_algs": ["aes128-ctr"]},
    ],
    ids=["sha1-host-key-signature", "compression-only", "sha1-mac"],
)
async def test_a_client_that_insists_on_a_dropped_algorithm_is_refused(
    rsa_server: Server, option: dict[str, list[str]]
) -> None:
    with pytest.raises(asyncssh.KeyExchangeFailed):
        await rsa_server.connect(LV_NW, **option)
