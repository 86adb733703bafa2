from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from qprserver.errors import InvalidKey
from qprserver.security.sshkeys import parse_public_key


def _openssh(key: object) -> str:
    return (
        key.public_key()
        .public_bytes(  # type: ignore[attr-defined,no-any-return]
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        .decode()
    )


def test_ed25519_key_is_accepted_with_openssh_fingerprint() -> None:
    line = _openssh(ed25519.Ed25519PrivateKey.generate()) + " user@host"
    key = parse_public_key(line)
    assert key.algorithm == "ssh-ed25519"
    assert key.comment == "user@host"
    blob = base64.b64decode(line.split()[1])
    import hashlib

    expected = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert key.fingerprint == "SHA256:" + expected


def test_rsa_3072_and_ecdsa_are_accepted() -> None:
    assert parse_public_key(_openssh(rsa.generate_private_key(65537, 3072))).bits == 3072
    assert parse_public_key(_openssh(ec.generate_private_key(ec.SECP256R1()))).bits == 256


def test_rsa_below_2048_bits_is_refused_as_too_weak() -> None:
    line = _openssh(rsa.generate_private_key(65537, 1024))
    with pytest.raises(InvalidKey, match="1024 Bit, mindestens 2048"):
        parse_public_key(line)


def test_dsa_is_refused() -> None:
    blob = struct.pack(">I", 7) + b"ssh-dss" + b"\x00" * 20
    with pytest.raises(InvalidKey, match="DSA"):
        parse_public_key("ssh-dss " + base64.b64encode(blob).decode())


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "kein öffentlicher SSH-Schlüssel"),
        ("ssh-ed25519", "kein öffentlicher SSH-Schlüssel"),
        ("ssh-ed25519 !!notbase64!!", "kein gültiges Base64"),
        ("foo-key AAAA", "nicht unterstützt"),
        ("-----BEGIN OPENSSH PRIVATE KEY----- x", "nicht unterstützt"),
    ],
)
def test_malformed_keys_are_refused_with_a_reason(line: str, message: str) -> None:
    with pytest.raises(InvalidKey, match=message):
        parse_public_key(line)


def test_type_inside_the_blob_must_match_the_declared_type() -> None:
    ed = _openssh(ed25519.Ed25519PrivateKey.generate()).split()[1]
    with pytest.raises(InvalidKey, match="passt nicht"):
        parse_public_key("ssh-rsa " + ed)
