"""Postal activation: a form anyone can fill in proves no institution, a letter to its
address does.

With ``registration.postal_activation`` an approved account stays ``pending`` until
the code of its activation letter is entered in the portal (``activate``).
``issue_letter`` makes a new code each time a letter is printed, so only the latest
letter works; ``notify/letters.py`` lays the letter out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import AccountStatus, RegistrationState, TokenPurpose
from qprserver.accounts.review import get_registration
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import RegistrationSettings
from qprserver.db.models import Account, OneTimeToken, Registration
from qprserver.errors import InvalidInput
from qprserver.security import tokens


@dataclass(frozen=True)
class Letter:
    """What an activation letter shows; the code exists in clear only here."""

    registration_id: int
    ik: str
    institution: str
    contact: str
    street: str
    postcode: str
    city: str
    code: str
    expires_at: datetime


def awaiting_letter(reg: Registration, account: Account) -> bool:
    return (
        reg.state is RegistrationState.FREIGESCHALTET
        and reg.activated_at is None
        and account.status is AccountStatus.PENDING
    )


async def awaits_letter(session: AsyncSession, account: Account) -> bool:
    """True when this pending account was approved and waits for its letter's code."""
    if account.status is not AccountStatus.PENDING:
        return False
    reg = await session.scalar(
        select(Registration).where(
            Registration.account_id == account.id,
            Registration.state == RegistrationState.FREIGESCHALTET,
        )
    )
    return reg is not None and awaiting_letter(reg, account)


async def issue_letter(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    registration_id: int,
    settings: RegistrationSettings,
) -> Letter:
    """A new activation code for an approved, not yet activated registration."""
    reg = await get_registration(session, registration_id)
    account = await session.get(Account, reg.account_id) if reg.account_id else None
    if account is None or not awaiting_letter(reg, account):
        raise InvalidInput(
            f"Registrierung {reg.id} wartet auf keinen Aktivierungsbrief (Stand: {reg.state.label})"
        )
    code = await tokens.issue(
        session,
        TokenPurpose.LETTER,
        now,
        timedelta(days=settings.letter_days),
        account_id=account.id,
    )
    await audit.record(
        session,
        actor,
        "registration.letter",
        at=now,
        target=reg.ik,
        details={"registration": reg.id},
    )
    return Letter(
        registration_id=reg.id,
        ik=reg.ik,
        institution=reg.institution,
        contact=reg.contact,
        street=reg.street,
        postcode=reg.postcode,
        city=reg.city,
        code=code,
        expires_at=now + timedelta(days=settings.letter_days),
    )


async def letters_due(session: AsyncSession, now: datetime) -> list[int]:
    """Approved registrations waiting for a letter that have no usable code yet."""
    rows = await session.execute(
        select(Registration.id, Registration.account_id)
        .join(Account, Account.id == Registration.account_id)
        .where(
            Registration.state == RegistrationState.FREIGESCHALTET,
            Registration.activated_at.is_(None),
            Account.status == AccountStatus.PENDING,
        )
        .order_by(Registration.id)
    )
    due = []
    for registration_id, account_id in rows:
        live = await session.scalar(
            select(OneTimeToken.id).where(
                OneTimeToken.account_id == account_id,
                OneTimeToken.purpose == TokenPurpose.LETTER,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
        )
        if live is None:
            due.append(registration_id)
    return due


async def activate(session: AsyncSession, now: datetime, account_id: int, code: str) -> Account:
    """Enter the letter's code: the approved account becomes usable. InvalidInput for a
    wrong, expired or used code (the portal counts it as a failed attempt)."""
    await tokens.consume(session, TokenPurpose.LETTER, code, now, account_id=account_id)
    account = await session.get_one(Account, account_id)
    reg = await session.scalar(
        select(Registration).where(
            Registration.account_id == account_id,
            Registration.state == RegistrationState.FREIGESCHALTET,
        )
    )
    if reg is None or not awaiting_letter(reg, account):
        raise InvalidInput(tokens.INVALID[TokenPurpose.LETTER])
    account.status = AccountStatus.ACTIVE
    account.updated_at = now
    reg.activated_at = reg.updated_at = now
    await audit.record(
        session,
        Actor(account.login, "web"),
        "registration.activate",
        at=now,
        target=account.login,
        details={"registration": reg.id},
    )
    return account
