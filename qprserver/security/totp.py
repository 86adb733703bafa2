"""Second factor: TOTP (RFC 6238) with encrypted secrets and single-use recovery codes.

Secrets are stored encrypted with a Fernet key kept in ``security.totp_key`` and
never logged. A code is accepted within one time step either side, and only once:
the step it matched is remembered and no code of that step or earlier counts again.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import Role
from qprserver.accounts.service import get_account
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import SecuritySettings
from qprserver.db.models import Account, RecoveryCode
from qprserver.errors import ConfigError, InvalidInput
from qprserver.notify import registration_mails

if TYPE_CHECKING:
    from qprserver.notify.outbox import Notifier

STEP = 30
RECOVERY_CODES = 10


def ensure_key(path: Path) -> bool:
    """Create the encryption key file unless it exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key())
    return True


def load_key(path: Path) -> Fernet:
    """The instance's TOTP encryption key."""
    try:
        return Fernet(path.read_bytes().strip())
    except FileNotFoundError:
        raise ConfigError(f"{path}: TOTP key missing; run `qprserver init`") from None
    except ValueError:
        raise ConfigError(f"{path}: not a valid key") from None


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


@dataclass(frozen=True)
class Enrolment:
    """What the account holder needs once: the URI (for the QR code) and recovery codes."""

    uri: str
    recovery_codes: list[str]


async def enable(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    ik: str,
    key: Fernet,
    issuer: str,
    secret: str | None = None,
) -> Enrolment:
    """Give an account a new TOTP secret and recovery codes (replacing earlier ones).

    ``secret``: one the holder has already proven to have (``code_matches``), as the
    web portal's enrolment does; by default a new one.
    """
    account = await get_account(session, ik)
    secret = secret or new_secret()
    account.totp_secret = key.encrypt(secret.encode()).decode()
    account.totp_last_step = None
    account.updated_at = now
    codes = await _replace_recovery_codes(session, account)
    await audit.record(session, actor, "totp.enable", at=now, target=account.login)
    return Enrolment(provisioning_uri(secret, account.login, issuer), codes)


async def _replace_recovery_codes(session: AsyncSession, account: Account) -> list[str]:
    old = await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == account.id))
    for row in old:
        await session.delete(row)
    codes = [f"{secrets.token_hex(3)}-{secrets.token_hex(3)}" for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(RecoveryCode(account_id=account.id, code_hash=_hash_code(code)))
    return codes


async def renew_recovery_codes(
    session: AsyncSession, actor: Actor, now: datetime, ik: str
) -> list[str]:
    """New recovery codes for an enrolled account; the earlier ones stop working."""
    account = await get_account(session, ik)
    if account.totp_secret is None:
        raise InvalidInput(f"Konto {account.login} hat keinen zweiten Faktor")
    codes = await _replace_recovery_codes(session, account)
    account.updated_at = now
    await audit.record(session, actor, "totp.recovery-codes", at=now, target=account.login)
    return codes


def new_secret() -> str:
    """A fresh TOTP secret (base32)."""
    return str(pyotp.random_base32())


def provisioning_uri(secret: str, ik: str, issuer: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (from a QR code)."""
    return str(pyotp.TOTP(secret).provisioning_uri(name=ik, issuer_name=issuer))


def code_matches(secret: str, code: str, now: datetime) -> bool:
    """True when code is the secret's TOTP code within one step of now (enrolment)."""
    code = code.strip()
    return code.isdigit() and len(code) == 6 and _matching_step(secret, code, now) is not None


async def disable(session: AsyncSession, actor: Actor, now: datetime, ik: str) -> None:
    """Remove the account's second factor."""
    account = await get_account(session, ik)
    if account.totp_secret is None:
        raise InvalidInput(f"Konto {account.login} hat keinen zweiten Faktor")
    account.totp_secret = None
    account.totp_last_step = None
    account.updated_at = now
    old = await session.scalars(select(RecoveryCode).where(RecoveryCode.account_id == account.id))
    for row in old:
        await session.delete(row)
    await audit.record(session, actor, "totp.disable", at=now, target=account.login)


async def reset(
    session: AsyncSession, actor: Actor, now: datetime, ik: str, notifier: Notifier
) -> None:
    """The operator's reset of a lost second factor: removed, audited, and mailed to the
    holder, who enrols again at the next web login."""
    await disable(session, actor, now, ik)
    account = await get_account(session, ik)
    event = await audit.record(session, actor, "totp.reset", at=now, target=account.login)
    if account.email:
        await notifier.queue_to(
            session,
            key=f"account:{event.id}",
            email=registration_mails.totp_reset(account.ik, account.name),
            to_addr=account.email,
            now=now,
            account_id=account.id,
        )


def requires_second_factor(account: Account, settings: SecuritySettings) -> bool:
    """True when the account must present a TOTP code after its first factor."""
    if account.totp_secret is not None:
        return True
    return any(account.has_role(Role(role)) for role in settings.require_2fa_roles)


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int(now.timestamp()) // STEP
    for step in (current - 1, current, current + 1):
        if secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


async def verify(
    session: AsyncSession, account_id: int, code: str, key: Fernet, now: datetime
) -> bool:
    """Check a TOTP or recovery code and use it up; False when wrong or used before."""
    account = await session.get(Account, account_id, with_for_update=True)
    if account is None or account.totp_secret is None:
        return False
    code = code.strip()
    if code.isdigit() and len(code) == 6:
        try:
            secret = key.decrypt(account.totp_secret.encode()).decode()
        except InvalidToken:
            return False
        step = _matching_step(secret, code, now)
        if step is None or (account.totp_last_step is not None and step <= account.totp_last_step):
            return False
        account.totp_last_step = step
        return True
    row = await session.scalar(
        select(RecoveryCode).where(
            RecoveryCode.account_id == account.id,
            RecoveryCode.code_hash == _hash_code(code),
            RecoveryCode.used_at.is_(None),
        )
    )
    if row is None:
        return False
    row.used_at = now
    return True
