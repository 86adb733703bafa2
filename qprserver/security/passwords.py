"""Password hashing with argon2id."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from qprserver.errors import InvalidInput

MIN_LENGTH = 12
_hasher = PasswordHasher()  # argon2id with the library's current recommended cost


@functools.cache
def _dummy_hash() -> str:
    """Verified against when an account does not exist, so a failed login costs the
    same whether or not the name is known. Made on first use: each hash takes the
    hasher's 64 MiB for a moment, which a process that never checks a password
    (a worker serving key logins only) need not spend at start.
    """
    return _hasher.hash("qprserver-dummy-password-for-timing")


def hash_password(password: str) -> str:
    """Hash a new password; refuse ones that are too short."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"Passwort zu kurz: mindestens {MIN_LENGTH} Zeichen verlangt")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when password matches; spends the same work when there is no hash."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
