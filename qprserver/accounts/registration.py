"""How a participant comes in by itself: the registration lifecycle (DESIGN.md §6).

``registriert`` (form sent) → ``bestaetigt`` (link in the mail clicked; a ``pending``
account exists, with no password yet) → ``beantragt`` (password set by a one-time link,
TOTP enrolled) → ``freigeschaltet`` (the operator approved; with postal activation the
account stays ``pending`` until the code of the letter is entered) or ``abgelehnt``.

Every step records an audit event and queues its German mail in the same transaction,
so a step and its mail exist together or not at all; mail keys name the step, so a
retried transaction or a job run twice sends nothing twice. No answer of ``register``
or ``request_password_reset`` tells whether an IK or an address is known: the edge
shows the same page, and the owner of a known IK gets a mail instead. The web portal
(``web/``) serves the forms and links; the operator reviews with the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import (
    AccountStatus,
    Procedure,
    RegistrationState,
    Role,
    TokenPurpose,
)
from qprserver.accounts.fields import (
    normalise_email,
    normalise_phone,
    normalise_procedures,
    normalise_text,
)
from qprserver.accounts.service import store_password
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import RegistrationSettings
from qprserver.db.models import Account, Registration
from qprserver.errors import InvalidInput, NotFound, TooManyRequests
from qprserver.ik import IK
from qprserver.notify import registration_mails as mails
from qprserver.notify.links import mail_link
from qprserver.notify.outbox import Notifier
from qprserver.security import tokens

# IK classes whose institutions deposit documents: Medizinische Dienste, the PKV's
# Prüfdienst, hospitals (quality reports).
DEPOSITING_CLASSES = {"19": "Medizinischer Dienst", "16": "PKV", "26": "Krankenhaus"}
OPEN_STATES = (
    RegistrationState.REGISTRIERT,
    RegistrationState.BESTAETIGT,
    RegistrationState.BEANTRAGT,
)
_POSTCODE = re.compile(r"[0-9]{5}")


@dataclass(frozen=True)
class RegistrationForm:
    """What a participant types into the registration form."""

    ik: str
    institution: str
    contact: str
    email: str
    phone: str
    street: str
    postcode: str
    city: str
    roles: tuple[str, ...]
    procedures: tuple[str, ...]
    ssh_key: str = ""


def _validated(form: RegistrationForm) -> Registration:
    """The form as an unsaved registration, or InvalidInput naming the first bad field."""
    ik = IK.parse(form.ik)
    email = normalise_email(form.email)
    if email is None:
        raise InvalidInput("E-Mail-Adresse: bitte angeben")
    phone = normalise_phone(form.phone)
    postcode = form.postcode.strip()
    if not _POSTCODE.fullmatch(postcode):
        raise InvalidInput("Postleitzahl: fünf Ziffern erwartet")
    roles = {r.strip().lower() for r in form.roles if r.strip()}
    if not roles:
        raise InvalidInput("Rolle: bitte Empfänger oder Einsteller wählen")
    if not roles <= {Role.RECIPIENT, Role.DEPOSITOR}:
        raise InvalidInput("Rolle: nur Empfänger (recipient) oder Einsteller (depositor)")
    if Role.DEPOSITOR in roles and ik.classification not in DEPOSITING_CLASSES:
        known = ", ".join(f"{k}… {v}" for k, v in DEPOSITING_CLASSES.items())
        raise InvalidInput(
            f"Rolle Einsteller: IK {ik} gehört zu keiner Einrichtungsart, die Dokumente "
            f"einstellt ({known})"
        )
    procedures = normalise_procedures(form.procedures)
    key = form.ssh_key.strip() or None
    if key is not None:
        if Procedure.SFTP not in procedures:
            raise InvalidInput("SSH-Schlüssel: nur mit dem Verfahren QPR_0_SFTP")
        from qprserver.security.sshkeys import parse_public_key

        parse_public_key(key)  # refuses a malformed, weak or unknown key
    return Registration(
        ik=ik.value,
        institution=normalise_text(form.institution, "Name der Einrichtung"),
        contact=normalise_text(form.contact, "Ansprechperson"),
        email=email,
        phone=phone,
        street=normalise_text(form.street, "Straße und Hausnummer"),
        postcode=postcode,
        city=normalise_text(form.city, "Ort", 100),
        roles=frozenset(Role(r) for r in roles),
        procedures=procedures,
        ssh_key=key,
    )


async def register(
    session: AsyncSession,
    now: datetime,
    form: RegistrationForm,
    *,
    address: str,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> None:
    """Take a registration form: a new registration and its confirmation mail, or, for
    an IK with an account or a registration under way, a mail to that owner instead.

    InvalidInput for a bad field, TooManyRequests past ``per_address_hour`` forms from
    one address; otherwise the caller shows the same answer whatever happened.
    """
    reg = _validated(form)
    recent = await session.scalar(
        select(func.count(Registration.id)).where(
            Registration.address == address,
            Registration.created_at > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= settings.per_address_hour:
        raise TooManyRequests(
            "Von Ihrer Adresse kamen in der letzten Stunde zu viele Registrierungen. "
            "Bitte versuchen Sie es später erneut."
        )
    if await _tell_owner(session, now, reg.ik, notifier):
        return
    reg.address = address[:64]
    reg.state = RegistrationState.REGISTRIERT
    reg.created_at = reg.updated_at = now
    session.add(reg)
    await session.flush()
    await audit.record(
        session,
        Actor("web", address),
        "registration.submit",
        at=now,
        target=reg.ik,
        details={"registration": reg.id, "roles": sorted(reg.roles), "email": reg.email},
    )
    await _send_confirmation(session, now, reg, settings, notifier)


async def _tell_owner(session: AsyncSession, now: datetime, ik: str, notifier: Notifier) -> bool:
    """True (and a mail to the owner, at most one a day) when the IK is taken."""
    account = await session.scalar(select(Account).where(Account.ik == ik, Account.site.is_(None)))
    pending = await session.scalar(
        select(Registration)
        .where(Registration.ik == ik, Registration.state.in_(OPEN_STATES))
        .order_by(Registration.id)
        .limit(1)
    )
    if account is None and pending is None:
        return False
    to = account.email if account is not None else pending.email if pending else None
    name = account.name if account is not None else pending.institution if pending else ""
    contact = pending.contact if pending is not None and account is None else ""
    if to:
        await notifier.queue_to(
            session,
            key=f"registration-known:{ik}:{now.date().isoformat()}",
            email=mails.registration_known(ik, name, contact),
            to_addr=to,
            now=now,
            account_id=account.id if account is not None else None,
        )
    return True


async def _send_confirmation(
    session: AsyncSession,
    now: datetime,
    reg: Registration,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> None:
    hours = settings.confirm_hours
    await mail_link(
        session,
        notifier,
        TokenPurpose.CONFIRM,
        now,
        timedelta(hours=hours),
        key=f"registration-confirm:{reg.id}",
        email=lambda token: mails.registration_confirm(
            reg.ik, reg.institution, reg.contact, token, hours
        ),
        to_addr=reg.email,
        registration_id=reg.id,
    )


async def resend_confirmation(
    session: AsyncSession,
    now: datetime,
    *,
    ik: str,
    email: str,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> None:
    """A new confirmation link for an unconfirmed registration of this IK and address
    (earlier links stop working); silently nothing when there is none."""
    try:
        parsed, address = IK.parse(ik).value, normalise_email(email)
    except InvalidInput:
        return
    reg = await session.scalar(
        select(Registration).where(
            Registration.ik == parsed,
            Registration.email == address,
            Registration.state == RegistrationState.REGISTRIERT,
        )
    )
    if reg is not None:
        await _send_confirmation(session, now, reg, settings, notifier)


async def confirm(
    session: AsyncSession,
    now: datetime,
    token: str,
    *,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> str:
    """The address is confirmed: a ``pending`` account is made and a one-time token to
    set its password returned (the portal goes on to that form; the mail has it too)."""
    row = await tokens.consume(session, TokenPurpose.CONFIRM, token, now)
    reg = await session.get_one(Registration, row.registration_id, with_for_update=True)
    if reg.state is not RegistrationState.REGISTRIERT:
        raise InvalidInput(tokens.INVALID[TokenPurpose.CONFIRM])
    institution = select(Account.id).where(Account.ik == reg.ik, Account.site.is_(None))
    if await session.scalar(institution) is not None:
        # Another registration of the IK was confirmed first.
        reg.state = RegistrationState.ABGELEHNT
        reg.reason = "Für dieses IK besteht bereits ein Zugang."
        reg.decided_at = reg.updated_at = now
        raise InvalidInput(
            "Für dieses IK besteht bereits ein Zugang; diese Registrierung wurde nicht übernommen."
        )
    account = Account(
        ik=reg.ik,
        login=reg.ik,
        name=reg.institution,
        email=reg.email,
        roles=reg.roles,
        land=IK(reg.ik).land,
        status=AccountStatus.PENDING,
        procedures=frozenset(),
        notify=True,
        created_at=now,
        updated_at=now,
    )
    session.add(account)
    await session.flush()
    reg.account_id = account.id
    reg.state = RegistrationState.BESTAETIGT
    reg.confirmed_at = reg.updated_at = now
    await audit.record(
        session,
        Actor(reg.ik, "web"),
        "registration.confirm",
        at=now,
        target=reg.ik,
        details={"registration": reg.id},
    )
    return await password_link(session, now, reg, account, settings, notifier)


async def password_link(
    session: AsyncSession,
    now: datetime,
    reg: Registration,
    account: Account,
    settings: RegistrationSettings,
    notifier: Notifier,
    *,
    reminder: bool = False,
) -> str:
    """A new one-time token to set the first password, mailed (as a reminder or not)."""
    hours = settings.password_hours
    make = mails.registration_reminder if reminder else mails.registration_password
    return await mail_link(
        session,
        notifier,
        TokenPurpose.PASSWORD,
        now,
        timedelta(hours=hours),
        key=f"registration-{'reminder' if reminder else 'password'}:{reg.id}",
        email=lambda token: make(reg.ik, reg.institution, reg.contact, token, hours),
        to_addr=reg.email,
        account_id=account.id,
    )


async def set_first_password(
    session: AsyncSession, now: datetime, token: str, password: str
) -> Account:
    """Set the password of a confirmed registrant, or of a report registration's account
    that has none yet (``qb/accounts.py``), by its one-time token; the portal then leads
    to enrolling the second factor."""
    from qprserver.qb.accounts import first_password_due
    from qprserver.security.passwords import hash_password

    hashed = hash_password(password)  # a too-short password uses no token
    row = await tokens.consume(session, TokenPurpose.PASSWORD, token, now)
    account = await session.get_one(Account, row.account_id)
    await session.refresh(account, ["password"])
    if account.status is not AccountStatus.PENDING and not first_password_due(account):
        raise InvalidInput(tokens.INVALID[TokenPurpose.PASSWORD])
    store_password(account, hashed, now)
    await audit.record(
        session, Actor(account.login, "web"), "password.set", at=now, target=account.login
    )
    return account


async def open_registration(session: AsyncSession, account_id: int) -> Registration:
    """The registration under way of a pending account, or NotFound."""
    reg = await session.scalar(
        select(Registration)
        .where(Registration.account_id == account_id, Registration.state.in_(OPEN_STATES))
        .with_for_update()
    )
    if reg is None:
        raise NotFound("keine offene Registrierung")
    return reg


async def apply(session: AsyncSession, now: datetime, account_id: int, notifier: Notifier) -> None:
    """Password and second factor are set: the application goes to the operator."""
    reg = await open_registration(session, account_id)
    account = await session.get_one(Account, account_id)
    await session.refresh(account, ["password"])
    if account.password is None or account.totp_secret is None:
        raise InvalidInput("Bitte zuerst Passwort und zweiten Faktor einrichten.")
    if reg.state is RegistrationState.BEANTRAGT:
        return
    reg.state = RegistrationState.BEANTRAGT
    reg.applied_at = reg.updated_at = now
    await audit.record(
        session,
        Actor(reg.ik, "web"),
        "registration.apply",
        at=now,
        target=reg.ik,
        details={"registration": reg.id},
    )
    await notifier.queue_to(
        session,
        key=f"registration-applied:{reg.id}",
        email=mails.registration_applied(
            reg.ik, reg.institution, reg.contact, sorted(reg.procedures)
        ),
        to_addr=reg.email,
        now=now,
        account_id=account.id,
    )
