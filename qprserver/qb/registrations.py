"""One registration per report and report year (Qb-R Anlage 2): IK + Standortnummer.

A hospital registers each report in the registration window of the year's calendar
(``calendar.py``), or late in the replacement window; the address is confirmed by a
one-time link (double opt-in, the lifecycle's tokens in ``security/tokens.py``). Only
a confirmed registration admits deliveries of that report: a report for an IK and
Standort without one is rejected with that reason. As in the participant lifecycle, no
answer tells whether a report is registered already: the registered address gets a
mail instead. Every step is audited and its mail queued in the same transaction.

Standortnummer (positive-list convention): ``00`` a hospital without sites, ``01``…
``98`` one report per site, ``99`` the overall report of a hospital with sites.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import RegistrationState, TokenPurpose
from qprserver.accounts.fields import normalise_email, normalise_phone, normalise_text
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import QbSettings, RegistrationSettings
from qprserver.db.models import QbRegistration
from qprserver.errors import InvalidInput, TooManyRequests
from qprserver.ik import IK
from qprserver.notify import qb_mails as mails
from qprserver.notify.links import mail_link
from qprserver.notify.outbox import Notifier
from qprserver.qb import accounts as qb_accounts
from qprserver.qb.calendar import YearCalendar, calendar_for, local_day
from qprserver.security import tokens

_SITE = re.compile(r"[0-9]{2}|[0-9]{6}")
HOSPITAL_CLASS = "26"


class Basis(StrEnum):
    """The basis of a hospital's admission (§ 108 SGB V)."""

    HOCHSCHULKLINIK = "hochschulklinik"
    PLANKRANKENHAUS = "plankrankenhaus"
    VERSORGUNGSVERTRAG = "versorgungsvertrag"


@dataclass(frozen=True)
class ReportRegistrationForm:
    """What a hospital types to register one report of a report year."""

    year: int
    ik: str
    site: str
    hospital: str
    contact: str
    email: str
    phone: str
    basis: str
    further_iks: tuple[str, ...] = ()


def validated_identity(ik_text: str, site_text: str) -> tuple[str, str]:
    """IK and Standortnummer of a report as typed, checked: (IK, Standort), or
    InvalidInput naming the bad one (registration and correction alike)."""
    ik = IK.parse(ik_text)
    if ik.classification != HOSPITAL_CLASS:
        raise InvalidInput(f"IK {ik}: kein Krankenhaus-IK (Klasse {HOSPITAL_CLASS}…)")
    site = site_text.strip()
    if not _SITE.fullmatch(site):
        raise InvalidInput(
            "Standortnummer: zwei Ziffern (00 ohne Standorte, 01… je Standort, 99 Gesamtbericht) "
            "oder ab Berichtsjahr 2020 die sechsstellige Nummer aus dem Standortverzeichnis"
        )
    return ik.value, site


def _validated(form: ReportRegistrationForm) -> QbRegistration:
    """The form as an unsaved registration, or InvalidInput naming the first bad field."""
    ik, site = validated_identity(form.ik, form.site)
    email = normalise_email(form.email)
    if email is None:
        raise InvalidInput("E-Mail-Adresse: bitte angeben")
    phone = normalise_phone(form.phone)
    try:
        basis = Basis(form.basis.strip().lower())
    except ValueError:
        raise InvalidInput(
            "Zulassung: Hochschulklinik, Plankrankenhaus oder Versorgungsvertrag"
        ) from None
    further = sorted({IK.parse(other).value for other in form.further_iks if other.strip()})
    return QbRegistration(
        year=form.year,
        ik=ik,
        site=site,
        hospital=normalise_text(form.hospital, "Name des Krankenhauses"),
        contact=normalise_text(form.contact, "Ansprechperson"),
        email=email,
        phone=phone,
        basis=basis.value,
        further_iks=",".join(further),
    )


def registration_window(calendar: YearCalendar, at_day: object) -> bool | None:
    """False in the registration window, True in the late one, None outside both."""
    if at_day in calendar.registration:
        return False
    if at_day in calendar.late_registration:
        return True
    return None


async def register(
    session: AsyncSession,
    now: datetime,
    form: ReportRegistrationForm,
    *,
    qb: QbSettings,
    settings: RegistrationSettings,
    notifier: Notifier,
    address: str,
) -> None:
    """Register a report: a new registration and its confirmation mail, or, when the
    report is registered already, a mail to the registered address instead.

    InvalidInput for a bad field or outside the registration windows (naming them),
    TooManyRequests past ``registration.per_address_hour`` forms from one address.
    """
    reg = _validated(form)
    recent = await session.scalar(
        select(func.count(QbRegistration.id)).where(
            QbRegistration.address == address[:64],
            QbRegistration.created_at > now - timedelta(hours=1),
        )
    )
    if (recent or 0) >= settings.per_address_hour:
        raise TooManyRequests(
            "Von Ihrer Adresse kamen in der letzten Stunde zu viele Registrierungen. "
            "Bitte versuchen Sie es später erneut."
        )
    calendar = calendar_for(qb, reg.year)
    late = registration_window(calendar, local_day(qb, now))
    if late is None:
        raise InvalidInput(
            f"Registrierung für das Berichtsjahr {reg.year} nur vom "
            f"{calendar.registration.start:%d.%m.%Y} bis {calendar.registration.end:%d.%m.%Y}, "
            f"nachträglich vom {calendar.late_registration.start:%d.%m.%Y} bis "
            f"{calendar.late_registration.end:%d.%m.%Y}."
        )
    known = await session.scalar(
        select(QbRegistration).where(
            QbRegistration.year == reg.year,
            QbRegistration.ik == reg.ik,
            QbRegistration.site == reg.site,
        )
    )
    if known is not None:
        await notifier.queue_to(
            session,
            key=f"qb-registration-known:{known.id}:{now.date().isoformat()}",
            email=mails.qb_registration_known(known.year, known.ik, known.site, known.hospital),
            to_addr=known.email,
            now=now,
        )
        return
    reg.state = RegistrationState.REGISTRIERT
    reg.address = address[:64]
    reg.late = late
    reg.created_at = reg.updated_at = now
    session.add(reg)
    await session.flush()
    await audit.record(
        session,
        Actor("web", address),
        "qb.registration.submit",
        at=now,
        target=reg.ik,
        details={"registration": reg.id, "year": reg.year, "site": reg.site, "late": late},
    )
    await send_confirmation(session, now, reg, settings, notifier)


async def send_confirmation(
    session: AsyncSession,
    now: datetime,
    reg: QbRegistration,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> None:
    """A (new) confirmation link for the registration's address; earlier ones stop."""
    hours = settings.confirm_hours
    await mail_link(
        session,
        notifier,
        TokenPurpose.QB_CONFIRM,
        now,
        timedelta(hours=hours),
        key=f"qb-registration-confirm:{reg.id}",
        email=lambda token: mails.qb_registration_confirm(
            reg.year, reg.ik, reg.site, reg.hospital, reg.contact, token, hours
        ),
        to_addr=reg.email,
        qb_registration_id=reg.id,
    )


async def confirm(
    session: AsyncSession,
    now: datetime,
    token: str,
    *,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> QbRegistration:
    """The address is confirmed by its link: the registration admits deliveries and
    gets its own account ``<IK>-<Standort>`` (``qb/accounts.py``; its first-password
    link is mailed)."""
    row = await tokens.consume(session, TokenPurpose.QB_CONFIRM, token, now)
    reg = await session.get_one(QbRegistration, row.qb_registration_id, with_for_update=True)
    if reg.state is not RegistrationState.REGISTRIERT:
        raise InvalidInput(tokens.INVALID[TokenPurpose.QB_CONFIRM])
    await qb_accounts.open_account(session, now, reg, settings, notifier)
    reg.state = RegistrationState.BESTAETIGT
    reg.confirmed_at = reg.updated_at = now
    await audit.record(
        session,
        Actor(reg.ik, "web"),
        "qb.registration.confirm",
        at=now,
        target=reg.ik,
        details={"registration": reg.id, "year": reg.year, "site": reg.site},
    )
    return reg


async def confirmed(session: AsyncSession, year: int, ik: str, site: str) -> bool:
    """True when the report (year, IK, Standort) has a confirmed registration."""
    found = await session.scalar(
        select(QbRegistration.id).where(
            QbRegistration.year == year,
            QbRegistration.ik == ik,
            QbRegistration.site == site,
            QbRegistration.state == RegistrationState.BESTAETIGT,
        )
    )
    return found is not None
