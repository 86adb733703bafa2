"""Password hashing with argon2id."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from qprserver.errors import InvalidInput

MIN_LENGTH = 12
_hasher = PasswordHasher()  # argon2id with the library's current recommended cost

# Verified against when an account does not exist, so a failed login costs the
# same whether or not the name is known.
_DUMMY_HASH = _hasher.hash("qprserver-dummy-password-for-timing")


def hash_password(password: str) -> str:
    """Hash a new password; refuse ones that are too short."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"Passwort zu kurz: mindestens {MIN_LENGTH} Zeichen verlangt")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when password matches; spends the same work when there is no hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
