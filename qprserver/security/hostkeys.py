"""Generation of SSH host keys at ``init``: only where missing, never overwriting."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

RSA_BITS = 3072


def _new_key(
    path: Path,
) -> ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    # The OpenSSH file naming convention says which type a file should hold.
    name = path.name
    if "rsa" in name:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if "ecdsa" in name:
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def ensure_host_key(path: Path) -> bool:
    """Create a host key at path unless one exists; True when a key was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = _new_key(path)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    # O_EXCL: two inits racing never overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    path.with_name(path.name + ".pub").write_bytes(public + b" qprserver-host\n")
    return True
