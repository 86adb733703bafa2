"""Each report registration's own account (Qb-R Anlage 2 Nr. 3–4: credentials per
registration).

The account of a registration logs in (SFTP and portal alike) as ``<IK>-<Standort>``,
e.g. ``260100023-01``; it shares the hospital's IK with the institution's account (if
there is one, login = IK) and differs by its Standort. It is made when the
registration's address is confirmed, and the same IK and Standort in a later report
year get the same account. Its password is set by a mailed one-time link (the first
password of the participant lifecycle, ``accounts/registration.py``; passwords are
never mailed), its second factor in the portal at the first web login.

It delivers, with role ``depositor`` and both procedures, one thing only: the quality
report ``<IK>-<Standort>-<Berichtsjahr>-xml.xml`` of its own IK and Standort
(``delivery_refusal``; whether that year is registered is the report check's rule
``REG-01``). In the portal it sees its registrations and changes their contact data at
any time (``change_contact``), validated as at registration and audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from qprserver.accounts.enums import ALL_PROCEDURES, AccountStatus, Role, TokenPurpose
from qprserver.accounts.fields import normalise_email, normalise_phone, normalise_text
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import RegistrationSettings
from qprserver.db.models import Account, QbRegistration
from qprserver.errors import InvalidInput, NotFound
from qprserver.ik import IK
from qprserver.notify import qb_mails as mails
from qprserver.notify.links import mail_link
from qprserver.notify.outbox import Notifier
from qprserver.qb.filename import ReportName


def login_name(ik: str, site: str) -> str:
    """The login name of the account of the report (IK, Standort)."""
    return f"{ik}-{site}"


async def open_account(
    session: AsyncSession,
    now: datetime,
    reg: QbRegistration,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> Account:
    """The confirmed registration's account, made or (same IK and Standort as an
    earlier registration) found, and tied to it; a link to set the first password is
    mailed to the registration's address while the account has no password."""
    login = login_name(reg.ik, reg.site)
    account = await session.scalar(
        select(Account).where(Account.login == login).options(selectinload(Account.password))
    )
    if account is None:
        account = Account(
            ik=reg.ik,
            login=login,
            site=reg.site,
            name=reg.hospital,
            email=reg.email,
            roles=frozenset({Role.DEPOSITOR}),
            land=IK(reg.ik).land,
            status=AccountStatus.ACTIVE,
            procedures=ALL_PROCEDURES,
            notify=True,
            created_at=now,
            updated_at=now,
        )
        account.password = None
        session.add(account)
        await session.flush()
        await audit.record(
            session,
            Actor(login, "web"),
            "account.add",
            at=now,
            target=login,
            details={
                "registration": reg.id,
                "name": account.name,
                "roles": Role.DEPOSITOR.value,
                "email": account.email,
            },
        )
    reg.account_id = account.id
    if account.password is None:
        hours = settings.password_hours
        await mail_link(
            session,
            notifier,
            TokenPurpose.PASSWORD,
            now,
            timedelta(hours=hours),
            key=f"qb-account-password:{reg.id}",
            email=lambda token: mails.qb_account_password(
                reg.year, reg.ik, reg.site, reg.hospital, reg.contact, login, token, hours
            ),
            to_addr=reg.email,
            account_id=account.id,
        )
    return account


async def follow_identity(
    session: AsyncSession,
    now: datetime,
    reg: QbRegistration,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> Account | None:
    """After a correction of IK or Standort the registration's account follows it, so
    that it delivers the corrected report: an account that serves this registration
    alone takes the new login ``<IK>-<Standort>`` (password and second factor stay);
    otherwise the registration is tied to the account of the new login, made as at the
    confirmation when there is none. An account left without a registration is
    disabled. None for a registration without an account (not confirmed yet)."""
    if reg.account_id is None:
        return None
    old = await session.get_one(Account, reg.account_id, with_for_update=True)
    login = login_name(reg.ik, reg.site)
    if old.login == login:
        return old
    shared = await session.scalar(
        select(QbRegistration.id)
        .where(QbRegistration.account_id == old.id, QbRegistration.id != reg.id)
        .limit(1)
    )
    taken = await session.scalar(select(Account.id).where(Account.login == login))
    if shared is None and taken is None:
        before = old.login
        old.login, old.ik, old.site, old.land = login, reg.ik, reg.site, IK(reg.ik).land
        old.updated_at = now
        await audit.record(
            session,
            Actor(before, "web"),
            "account.update",
            at=now,
            target=login,
            details={"registration": reg.id, "login": {"before": before, "after": login}},
        )
        return old
    account = await open_account(session, now, reg, settings, notifier)
    if shared is None:
        old.status, old.updated_at = AccountStatus.DISABLED, now
        await audit.record(
            session,
            Actor(old.login, "web"),
            "account.disable",
            at=now,
            target=old.login,
            details={"registration": reg.id, "reason": f"Registrierung jetzt {login}"},
        )
    return account


def first_password_due(account: Account) -> bool:
    """True for a report registration's account that has no password yet (its
    ``password`` loaded): the mailed first-password link may set one."""
    return account.site is not None and account.password is None


def delivery_refusal(depositor: Account, report: ReportName | None) -> str | None:
    """Why this account may not deliver the upload (German), or None when it may.

    ``report``: the parts of the upload's name when it is a quality report (not
    addressed to a recipient directly), else None. Institution accounts are not
    limited here; a report registration's account delivers its own report only.
    """
    if depositor.site is None:
        return None
    own = f"{depositor.ik}-{depositor.site}-<Berichtsjahr>-xml.xml"
    if report is None:
        return (
            f"Das Konto {depositor.login} einer Berichtsregistrierung liefert nur den "
            f"Qualitätsbericht {own}."
        )
    if (report.ik, report.site) != (depositor.ik, depositor.site):
        return (
            f"Der Bericht ist für IK {report.ik}, Standort {report.site}; das Konto "
            f"{depositor.login} liefert nur den Bericht seiner Registrierung (IK "
            f"{depositor.ik}, Standort {depositor.site}): {own}."
        )
    return None


async def registrations_of(session: AsyncSession, account_id: int) -> list[QbRegistration]:
    """The report registrations of an account, newest report year first."""
    rows = await session.scalars(
        select(QbRegistration)
        .where(QbRegistration.account_id == account_id)
        .order_by(QbRegistration.year.desc(), QbRegistration.id)
    )
    return list(rows.all())


@dataclass(frozen=True)
class ContactForm:
    """The contact data of a registration, as typed in the portal."""

    hospital: str
    contact: str
    email: str
    phone: str


async def change_contact(
    session: AsyncSession,
    now: datetime,
    account_id: int,
    registration_id: int,
    form: ContactForm,
    *,
    address: str,
) -> dict[str, str]:
    """Change the contact data of one of the account's registrations (checked as at
    registration; InvalidInput names the first bad field, NotFound for another
    account's registration); the changed fields. The account's name and address
    follow, so its mails go to the new address."""
    reg = await session.scalar(
        select(QbRegistration)
        .where(QbRegistration.id == registration_id, QbRegistration.account_id == account_id)
        .with_for_update()
    )
    if reg is None:
        raise NotFound("keine Registrierung dieses Kontos")
    email = normalise_email(form.email)
    if email is None:
        raise InvalidInput("E-Mail-Adresse: bitte angeben")
    wanted = {
        "hospital": normalise_text(form.hospital, "Name des Krankenhauses"),
        "contact": normalise_text(form.contact, "Ansprechperson"),
        "email": email,
        "phone": normalise_phone(form.phone),
    }
    changes = {key: value for key, value in wanted.items() if getattr(reg, key) != value}
    if not changes:
        return changes
    for key, value in changes.items():
        setattr(reg, key, value)
    reg.updated_at = now
    account = await session.get_one(Account, account_id)
    account.name, account.email, account.updated_at = reg.hospital, reg.email, now
    await audit.record(
        session,
        Actor(account.login, address),
        "qb.registration.contact",
        at=now,
        target=reg.ik,
        details={"registration": reg.id, "year": reg.year, "site": reg.site, **changes},
    )
    return changes
