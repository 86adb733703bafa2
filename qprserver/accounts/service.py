"""Accounts, their SSH keys and passwords (input checks: ``fields.py``).

An account is named by its login name: an institution's by its IK (one per IK), a
report registration's by ``<IK>-<Standort>`` (made by ``qb/accounts.py``); the
commands take either.

Every function takes the acting party and the time, records an audit event in the
caller's transaction, and raises errors from ``qprserver.errors`` on bad input
without changing anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from qprserver.accounts.enums import (
    AccountStatus,
    Role,
    format_procedures,
    format_roles,
)
from qprserver.accounts.fields import (
    is_login,
    normalise_email,
    normalise_networks,
    normalise_procedures,
    normalise_roles,
)
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.models import Account, PasswordCredential, SSHKey
from qprserver.errors import AlreadyExists, InvalidInput, NotFound
from qprserver.ik import IK, validate_land
from qprserver.notify import emails

if TYPE_CHECKING:
    # Mail, key and password modules come in only with the commands that use them:
    # ``account list`` should not import Jinja2, aiosmtplib, cryptography and argon2.
    from qprserver.notify.outbox import Notifier


async def get_account(session: AsyncSession, login: str) -> Account:
    """The account with this login name (an IK, or ``<IK>-<Standort>``), or NotFound."""
    ik, dash, site = login.strip().partition("-")
    parsed = IK.parse(ik)
    name = f"{parsed.value}-{site}" if dash else parsed.value
    account = None
    if is_login(name):
        account = await session.scalar(
            select(Account)
            .where(Account.login == name)
            .options(selectinload(Account.keys), selectinload(Account.password))
        )
    if account is None:
        raise NotFound(f"kein Konto {name}" if dash else f"kein Konto mit IK {parsed}")
    return account


async def list_accounts(session: AsyncSession, role: Role | None = None) -> list[Account]:
    """All accounts by login name, optionally only those having a role."""
    rows = (
        await session.scalars(
            select(Account)
            .options(selectinload(Account.keys), selectinload(Account.password))
            .order_by(Account.login)
        )
    ).all()
    return [a for a in rows if role is None or a.has_role(role)]


async def add_account(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    *,
    ik: str,
    name: str,
    email: str | None,
    roles: Iterable[str],
    land: str | None = None,
    procedures: Iterable[str] | None = None,
    notifier: Notifier,
) -> Account:
    """Create an account; the Land comes from the IK unless given; approved for both
    procedures unless ``procedures`` names them."""
    parsed = IK.parse(ik)
    if not name.strip():
        raise InvalidInput("Name darf nicht leer sein")
    role_set = normalise_roles(roles)
    procedure_set = normalise_procedures(procedures)
    address = normalise_email(email)
    land_code = validate_land(land) if land else parsed.land
    if await session.scalar(select(Account.id).where(Account.login == parsed.value)):
        raise AlreadyExists(f"Konto mit IK {parsed} existiert bereits")
    account = Account(
        ik=parsed.value,
        login=parsed.value,
        name=name.strip(),
        email=address,
        roles=role_set,
        land=land_code,
        status=AccountStatus.ACTIVE,
        procedures=procedure_set,
        notify=True,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    event = await audit.record(
        session,
        actor,
        "account.add",
        at=now,
        target=parsed.value,
        details={
            "name": account.name,
            "roles": format_roles(role_set),
            "land": land_code,
            "email": address,
            "procedures": format_procedures(procedure_set),
        },
    )
    await notifier.queue(
        session,
        key=f"account:{event.id}",
        email=emails.account_created(account),
        account=account,
        now=now,
    )
    return account


async def set_status(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    ik: str,
    status: AccountStatus,
    notifier: Notifier,
) -> Account:
    """Enable or disable an account."""
    account = await get_account(session, ik)
    status = AccountStatus(status)
    if account.status is not status:
        account.status = status
        account.updated_at = now
        action = "account.enable" if status is AccountStatus.ACTIVE else "account.disable"
        event = await audit.record(session, actor, action, at=now, target=account.login)
        if status is AccountStatus.DISABLED:
            await notifier.queue(
                session,
                key=f"account:{event.id}",
                email=emails.account_disabled(account),
                account=account,
                now=now,
            )
    return account


async def update_account(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    ik: str,
    *,
    name: str | None = None,
    email: str | None = None,
    notify: bool | None = None,
    bundles: bool | None = None,
    allowed_networks: list[str] | None = None,
    max_sessions: int | None = None,
    expires_at: datetime | None = None,
    procedures: Iterable[str] | None = None,
) -> Account:
    """Change an account's name, address, switches, procedures or restrictions.

    An empty email removes the address; an empty network list allows any source;
    max_sessions 0 removes the limit; expires_at in the year 1 removes the expiry.
    """
    account = await get_account(session, ik)
    changes: dict[str, object] = {}
    if allowed_networks is not None:
        changes["allowed_networks"] = normalise_networks(allowed_networks)
    if max_sessions is not None:
        if max_sessions < 0:
            raise InvalidInput("max_sessions darf nicht negativ sein")
        changes["max_sessions"] = max_sessions or None
    if expires_at is not None:
        changes["expires_at"] = None if expires_at.year == 1 else expires_at
    if procedures is not None:
        changes["procedures"] = normalise_procedures(procedures)
    if name is not None:
        if not name.strip():
            raise InvalidInput("Name darf nicht leer sein")
        changes["name"] = name.strip()
    if email is not None:
        changes["email"] = normalise_email(email)
    if notify is not None:
        changes["notify"] = notify
    if bundles is not None:
        changes["bundles"] = bundles
    for key, value in changes.items():
        setattr(account, key, value)
    if changes:
        account.updated_at = now
        await audit.record(
            session,
            actor,
            "account.update",
            at=now,
            target=account.login,
            details={k: _audit_value(v) for k, v in changes.items()},
        )
    return account


def _audit_value(value: object) -> object:
    """A change as the audit log has always written it (networks comma-joined)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, frozenset):
        return format_procedures(value)
    return value


async def add_key(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    ik: str,
    key_line: str,
    notifier: Notifier,
) -> SSHKey:
    """Vet and attach an SSH public key."""
    account = await get_account(session, ik)
    from qprserver.security.sshkeys import parse_public_key

    key = parse_public_key(key_line)
    if any(k.fingerprint == key.fingerprint for k in account.keys):
        raise AlreadyExists(f"Schlüssel {key.fingerprint} ist für {account.login} schon hinterlegt")
    row = SSHKey(
        account_id=account.id,
        algorithm=key.algorithm,
        bits=key.bits,
        fingerprint=key.fingerprint,
        public_key=key.openssh,
        comment=key.comment,
        created_at=now,
    )
    session.add(row)
    account.updated_at = now
    await session.flush()
    event = await audit.record(
        session,
        actor,
        "key.add",
        at=now,
        target=account.login,
        details={"fingerprint": key.fingerprint, "algorithm": key.algorithm},
    )
    await notifier.queue(
        session,
        key=f"account:{event.id}",
        email=emails.key_added(account, key.fingerprint, key.algorithm),
        account=account,
        now=now,
    )
    return row


async def remove_key(
    session: AsyncSession, actor: Actor, now: datetime, ik: str, fingerprint: str
) -> None:
    """Detach an SSH key by its fingerprint (with or without the ``SHA256:`` prefix)."""
    account = await get_account(session, ik)
    wanted = fingerprint if fingerprint.startswith("SHA256:") else "SHA256:" + fingerprint
    for key in account.keys:
        if key.fingerprint == wanted:
            await session.delete(key)
            account.updated_at = now
            await audit.record(
                session,
                actor,
                "key.remove",
                at=now,
                target=account.login,
                details={"fingerprint": wanted},
            )
            return
    raise NotFound(f"Konto {account.login} hat keinen Schlüssel {wanted}")


async def set_password(
    session: AsyncSession, actor: Actor, now: datetime, ik: str, password: str
) -> None:
    """Set or replace the account's password (argon2id)."""
    account = await get_account(session, ik)
    from qprserver.security.passwords import hash_password

    store_password(account, hash_password(password), now)
    await audit.record(session, actor, "password.set", at=now, target=account.login)


def store_password(account: Account, hashed: str, now: datetime) -> None:
    """Set or replace an account's password hash (its ``password`` relation loaded)."""
    if account.password is None:
        account.password = PasswordCredential(password_hash=hashed, updated_at=now)
    else:
        account.password.password_hash = hashed
        account.password.updated_at = now
    account.updated_at = now


class KeySummary(TypedDict):
    fingerprint: str
    algorithm: str
    comment: str


class AccountSummary(TypedDict):
    ik: str
    login: str
    site: str | None
    name: str
    email: str | None
    roles: list[str]
    land: str | None
    status: str
    procedures: list[str]
    notify: bool
    bundles: bool
    second_factor: bool
    allowed_networks: list[str]
    max_sessions: int | None
    expires_at: str | None
    keys: list[KeySummary]
    password: bool
    created_at: str
    updated_at: str


def account_summary(account: Account) -> AccountSummary:
    """A plain dict for ``--json`` output and tables."""
    return {
        "ik": account.ik,
        "login": account.login,
        "site": account.site,
        "name": account.name,
        "email": account.email,
        "roles": [role.value for role in sorted(account.roles)],
        "land": account.land,
        "status": account.status.value,
        "procedures": sorted(p.value for p in account.procedures),
        "notify": account.notify,
        "bundles": account.bundles,
        "second_factor": account.totp_secret is not None,
        "allowed_networks": [str(n) for n in account.allowed_networks],
        "max_sessions": account.max_sessions,
        "expires_at": account.expires_at.isoformat() if account.expires_at else None,
        "keys": [
            {"fingerprint": k.fingerprint, "algorithm": k.algorithm, "comment": k.comment}
            for k in account.keys
        ],
        "password": account.password is not None,
        "created_at": account.created_at.isoformat(),
        "updated_at": account.updated_at.isoformat(),
    }
