"""Parsing and vetting of SSH public keys given by operators.

Accepted: Ed25519, ECDSA (NIST P-256/384/521), RSA of at least 2048 bits, and
FIDO security keys (sk-ssh-ed25519, sk-ecdsa-sha2-nistp256). Refused: DSA and
anything malformed. The fingerprint is OpenSSH's SHA256 form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from qprserver.errors import InvalidKey

MIN_RSA_BITS = 2048

_CRYPTOGRAPHY_TYPES = {
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
}
_SK_TYPES = {"sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}
_REFUSED = {"ssh-dss": "DSA-Schlüssel sind unsicher und nicht erlaubt"}


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A vetted public key in OpenSSH one-line form."""

    algorithm: str
    bits: int | None
    fingerprint: str
    openssh: str
    comment: str


def fingerprint_of(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _blob_type(blob: bytes) -> str:
    if len(blob) < 4:
        raise InvalidKey("Schlüssel beschädigt: zu kurz")
    (length,) = struct.unpack(">I", blob[:4])
    if length > 64 or len(blob) < 4 + length:
        raise InvalidKey("Schlüssel beschädigt: Typangabe ungültig")
    return blob[4 : 4 + length].decode("ascii", errors="replace")


def parse_public_key(line: str) -> PublicKey:
    """Parse one OpenSSH public key line; raise InvalidKey saying what is wrong."""
    fields = line.strip().split(None, 2)
    if len(fields) < 2:
        raise InvalidKey("kein öffentlicher SSH-Schlüssel (erwartet: 'typ base64 [kommentar]')")
    key_type, b64 = fields[0], fields[1]
    comment = fields[2].strip() if len(fields) > 2 else ""
    if key_type in _REFUSED:
        raise InvalidKey(_REFUSED[key_type])
    if key_type not in _CRYPTOGRAPHY_TYPES | _SK_TYPES:
        raise InvalidKey(f"Schlüsseltyp {key_type!r} wird nicht unterstützt")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey("Schlüssel beschädigt: kein gültiges Base64") from None
    if _blob_type(blob) != key_type:
        raise InvalidKey("Schlüssel beschädigt: Typ im Schlüssel passt nicht zur Angabe")
    bits: int | None = None
    if key_type in _CRYPTOGRAPHY_TYPES:
        try:
            key = load_ssh_public_key(f"{key_type} {b64}".encode("ascii"))
        except (ValueError, TypeError) as exc:
            raise InvalidKey(f"Schlüssel beschädigt: {exc}") from None
        if isinstance(key, rsa.RSAPublicKey):
            bits = key.key_size
            if bits < MIN_RSA_BITS:
                raise InvalidKey(
                    f"RSA-Schlüssel zu schwach: {bits} Bit, mindestens {MIN_RSA_BITS} verlangt"
                )
        else:
            bits = getattr(key, "key_size", None)
    return PublicKey(
        algorithm=key_type,
        bits=bits,
        fingerprint=fingerprint_of(blob),
        openssh=f"{key_type} {b64}",
        comment=comment[:200],
    )
