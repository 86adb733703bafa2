"""The operator's side of registrations: review, decide, and the daily jobs.

``approve`` and ``reject`` end an application with a status mail. With
``registration.postal_activation`` an approved account stays ``pending`` until the
code of its activation letter is entered in the portal (``activation.py``).
``purge_unconfirmed`` and ``remind_stuck`` are the jobs; the reminder goes once per
registration, whatever number of runs or nodes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import AccountStatus, Procedure, RegistrationState
from qprserver.accounts.fields import normalise_procedures
from qprserver.accounts.registration import OPEN_STATES, password_link
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import RegistrationSettings
from qprserver.db.models import Account, OneTimeToken, Registration, SSHKey
from qprserver.errors import InvalidInput, NotFound
from qprserver.ik import validate_land
from qprserver.notify import registration_mails as mails
from qprserver.notify.outbox import Notifier
from qprserver.security import tokens


class RegistrationSummary(TypedDict):
    id: int
    ik: str
    institution: str
    contact: str
    email: str
    phone: str
    address: str
    roles: list[str]
    procedures: list[str]
    ssh_key: bool
    state: str
    reason: str | None
    created_at: str
    confirmed_at: str | None
    applied_at: str | None
    decided_at: str | None
    activated_at: str | None
    stuck: bool


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def summary(
    reg: Registration, now: datetime, settings: RegistrationSettings
) -> RegistrationSummary:
    """A plain dict for ``--json`` and tables; ``stuck``: confirmed, then nothing for a week."""
    stuck = (
        reg.state is RegistrationState.BESTAETIGT
        and reg.confirmed_at is not None
        and reg.confirmed_at <= now - timedelta(days=settings.reminder_days)
    )
    return {
        "id": reg.id,
        "ik": reg.ik,
        "institution": reg.institution,
        "contact": reg.contact,
        "email": reg.email,
        "phone": reg.phone,
        "address": f"{reg.street}, {reg.postcode} {reg.city}",
        "roles": sorted(reg.roles),
        "procedures": sorted(reg.procedures),
        "ssh_key": reg.ssh_key is not None,
        "state": reg.state.value,
        "reason": reg.reason,
        "created_at": reg.created_at.isoformat(),
        "confirmed_at": _iso(reg.confirmed_at),
        "applied_at": _iso(reg.applied_at),
        "decided_at": _iso(reg.decided_at),
        "activated_at": _iso(reg.activated_at),
        "stuck": stuck,
    }


async def list_registrations(
    session: AsyncSession, state: RegistrationState | None = None
) -> list[Registration]:
    """Registrations, newest first, optionally in one state."""
    query = select(Registration).order_by(Registration.id.desc())
    if state is not None:
        query = query.where(Registration.state == state)
    return list((await session.scalars(query)).all())


async def get_registration(session: AsyncSession, registration_id: int) -> Registration:
    reg = await session.get(Registration, registration_id, with_for_update=True)
    if reg is None:
        raise NotFound(f"keine Registrierung {registration_id}")
    return reg


async def approve(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    registration_id: int,
    *,
    procedures: Iterable[str] | None,
    land: str | None,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> Registration:
    """Approve an application (``beantragt``) for the procedures asked for or given."""
    reg = await get_registration(session, registration_id)
    if reg.state is not RegistrationState.BEANTRAGT:
        raise InvalidInput(
            f"Registrierung {reg.id} ist {reg.state.label}; freischalten lässt sich nur "
            "eine beantragte (Passwort und zweiter Faktor eingerichtet)"
        )
    granted = normalise_procedures(procedures) if procedures else reg.procedures
    account = await session.get_one(Account, reg.account_id)
    account.procedures = granted
    if land:
        account.land = validate_land(land)
    if reg.ssh_key and Procedure.SFTP in granted:
        from qprserver.security.sshkeys import parse_public_key

        key = parse_public_key(reg.ssh_key)
        await session.refresh(account, ["keys"])
        if all(k.fingerprint != key.fingerprint for k in account.keys):
            account.keys.append(
                SSHKey(
                    algorithm=key.algorithm,
                    bits=key.bits,
                    fingerprint=key.fingerprint,
                    public_key=key.openssh,
                    comment=key.comment,
                    created_at=now,
                )
            )
    postal = settings.postal_activation
    if not postal:
        account.status = AccountStatus.ACTIVE
    account.updated_at = now
    reg.state = RegistrationState.FREIGESCHALTET
    reg.decided_at = reg.updated_at = now
    await audit.record(
        session,
        actor,
        "registration.approve",
        at=now,
        target=reg.ik,
        details={
            "registration": reg.id,
            "procedures": sorted(granted),
            "land": account.land,
            "postal": postal,
        },
    )
    await notifier.queue_to(
        session,
        key=f"registration-decided:{reg.id}",
        email=mails.registration_approved(
            reg.ik,
            reg.institution,
            reg.contact,
            sorted(granted),
            sftp_without_key=Procedure.SFTP in granted and not reg.ssh_key,
            postal=postal,
        ),
        to_addr=reg.email,
        now=now,
        account_id=account.id,
    )
    return reg


async def reject(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    registration_id: int,
    *,
    reason: str,
    notifier: Notifier,
) -> Registration:
    """Reject a registration under way with a reason; its account logs in nowhere."""
    reason = " ".join(reason.split())
    if not reason:
        raise InvalidInput("eine Begründung ist nötig (--reason)")
    reg = await get_registration(session, registration_id)
    if reg.state not in OPEN_STATES:
        raise InvalidInput(f"Registrierung {reg.id} ist schon {reg.state.label}")
    reg.state = RegistrationState.ABGELEHNT
    reg.reason = reason
    reg.decided_at = reg.updated_at = now
    if reg.account_id is not None:
        account = await session.get_one(Account, reg.account_id)
        account.status = AccountStatus.DISABLED
        account.updated_at = now
    await audit.record(
        session,
        actor,
        "registration.reject",
        at=now,
        target=reg.ik,
        details={"registration": reg.id, "reason": reason},
    )
    await notifier.queue_to(
        session,
        key=f"registration-decided:{reg.id}",
        email=mails.registration_rejected(reg.ik, reg.institution, reg.contact, reason),
        to_addr=reg.email,
        now=now,
        account_id=reg.account_id,
    )
    return reg


async def purge_unconfirmed(
    session: AsyncSession, now: datetime, settings: RegistrationSettings
) -> int:
    """Remove registrations never confirmed within ``purge_days``; returns how many."""
    cutoff = now - timedelta(days=settings.purge_days)
    ids = (
        await session.scalars(
            select(Registration.id).where(
                Registration.state == RegistrationState.REGISTRIERT,
                Registration.created_at <= cutoff,
            )
        )
    ).all()
    if ids:
        await session.execute(delete(OneTimeToken).where(OneTimeToken.registration_id.in_(ids)))
        await session.execute(delete(Registration).where(Registration.id.in_(ids)))
        await audit.record(
            session,
            Actor.system(),
            "registration.purge",
            at=now,
            details={"registrations": list(ids)},
        )
    await tokens.purge(session, now)
    return len(ids)


async def remind_stuck(
    session: AsyncSession, now: datetime, settings: RegistrationSettings, notifier: Notifier
) -> int:
    """One reminder with a new password link to registrations confirmed ``reminder_days``
    ago and not applied since; returns how many were reminded."""
    cutoff = now - timedelta(days=settings.reminder_days)
    stuck = (
        await session.scalars(
            select(Registration)
            .where(
                Registration.state == RegistrationState.BESTAETIGT,
                Registration.confirmed_at <= cutoff,
                Registration.reminded_at.is_(None),
            )
            .with_for_update(skip_locked=True)
        )
    ).all()
    for reg in stuck:
        account = await session.get_one(Account, reg.account_id)
        await password_link(session, now, reg, account, settings, notifier, reminder=True)
        reg.reminded_at = reg.updated_at = now
    return len(stuck)
