"""The correction phase of a report year (Qb-R Anlage 2 Nr. 5–6): after the registration
window the operator hands the registrations to the QS-Stellen (``qb registrations
export``) and imports the mismatches of IK and Standortnummer they report
(``import_mismatches``). Each registration named gets a mail with the reported mismatch
and a one-time link, valid to the end of the phase, to the portal page where the
hospital corrects IK and Standort (``correct_by_link``).

IK and Standort of a registration change only in the registration window and the
correction phase (``change_identity``, which a logged-in page can call as well), are
checked as at registration, never take those of another registration of the year, and
every change is audited. After the phase they are fixed; the confirmation mail with the
registered data follows (``confirmation.py``).

Mismatch files (``csvrows``): the columns ``IK;Standort;Grund`` (``Standortnummer`` and
``reason`` are taken for the last two), one registration of the year per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import TokenPurpose
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import QbSettings, RegistrationSettings
from qprserver.db.models import QbRegistration
from qprserver.errors import InvalidInput
from qprserver.notify import qb_mails as mails
from qprserver.notify.emails import Email
from qprserver.notify.links import mail_link
from qprserver.notify.outbox import Notifier
from qprserver.qb import accounts as qb_accounts
from qprserver.qb import csvrows
from qprserver.qb.calendar import YearCalendar, calendar_for, end_of_day, local_day
from qprserver.qb.registrations import validated_identity
from qprserver.security import tokens

COLUMNS = ("ik", "standort", "grund")
_ALIASES = {"standortnummer": "standort", "reason": "grund"}
_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One row of a QS-Stelle's mismatch report: the registration and what differs."""

    line: int
    ik: str
    site: str
    reason: str


def parse(data: bytes) -> list[Mismatch]:
    """The rows of a mismatch file, or InvalidInput naming every bad row by its line."""
    found = csvrows.read(data, "mismatches", COLUMNS, "IK;Standort;Grund", _ALIASES)
    rows: list[Mismatch] = []
    for line, value in found.rows:
        if not value["grund"]:
            found.bad(line, "Grund (reason) is empty")
            continue
        key = found.report(line, value)
        if key is not None:
            rows.append(Mismatch(line, *key, " ".join(value["grund"].split())[:_REASON_CHARS]))
    found.refuse_if_bad()
    return rows


def _correction_mail(reg: QbRegistration, reason: str, until: str) -> Callable[[str], Email]:
    return lambda token: mails.qb_correction(
        reg.year, reg.ik, reg.site, reg.hospital, reg.contact, reason, token, until
    )


async def import_mismatches(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    year: int,
    rows: list[Mismatch],
    *,
    qb: QbSettings,
    notifier: Notifier,
) -> list[dict[str, object]]:
    """Note each row's mismatch on its registration and mail the correction link; the
    registrations concerned, as rows. Only in the correction phase; a row naming no
    registration of ``year`` is a bad row, and then nothing is imported."""
    phase = calendar_for(qb, year).correction
    if local_day(qb, now) not in phase:
        raise InvalidInput(
            f"mismatches {year}: imported only in the correction phase "
            f"{phase.start:%d.%m.%Y}–{phase.end:%d.%m.%Y}"
        )
    registered = {
        (reg.ik, reg.site): reg
        for reg in await session.scalars(
            select(QbRegistration).where(QbRegistration.year == year).with_for_update()
        )
    }
    found = csvrows.Rows("mismatches")
    for row in rows:
        if (row.ik, row.site) not in registered:
            found.bad(row.line, f"IK {row.ik} Standort {row.site} is not registered for {year}")
    found.refuse_if_bad()
    until = f"{phase.end:%d.%m.%Y}"
    lifetime = end_of_day(qb, phase.end) - now
    concerned: list[dict[str, object]] = []
    for row in rows:
        reg = registered[row.ik, row.site]
        reg.mismatch, reg.mismatch_at, reg.updated_at = row.reason, now, now
        await audit.record(
            session,
            actor,
            "qb.registration.mismatch",
            at=now,
            target=reg.ik,
            details={"registration": reg.id, "year": year, "site": reg.site, "reason": row.reason},
        )
        await mail_link(
            session,
            notifier,
            TokenPurpose.QB_CORRECT,
            now,
            lifetime,
            key=f"qb-correction:{reg.id}",
            email=_correction_mail(reg, row.reason, until),
            to_addr=reg.email,
            qb_registration_id=reg.id,
        )
        concerned.append(
            {
                "ik": reg.ik,
                "standort": reg.site,
                "name": reg.hospital,
                "email": reg.email,
                "grund": row.reason,
            }
        )
    return concerned


def identity_open(calendar: YearCalendar, day: object) -> bool:
    """True on the days IK and Standort of a registration may change."""
    return day in calendar.registration or day in calendar.correction


async def change_identity(
    session: AsyncSession,
    actor: Actor,
    now: datetime,
    reg: QbRegistration,
    *,
    ik: str,
    site: str,
    qb: QbSettings,
) -> bool:
    """Set IK and Standort of a registration as typed; True when they changed. Refused
    (InvalidInput, German) outside the registration window and the correction phase,
    for a bad IK or Standort, and for those of another registration of the year."""
    calendar = calendar_for(qb, reg.year)
    if not identity_open(calendar, local_day(qb, now)):
        raise InvalidInput(
            f"IK und Standortnummer der Registrierung für das Berichtsjahr {reg.year} sind "
            f"festgeschrieben: sie lassen sich nur in der {calendar.registration} und der "
            f"{calendar.correction} ändern."
        )
    new_ik, new_site = validated_identity(ik, site)
    changed = (new_ik, new_site) != (reg.ik, reg.site)
    if changed:
        taken = await session.scalar(
            select(QbRegistration.id).where(
                QbRegistration.year == reg.year,
                QbRegistration.ik == new_ik,
                QbRegistration.site == new_site,
                QbRegistration.id != reg.id,
            )
        )
        if taken is not None:
            raise InvalidInput(
                f"Für IK {new_ik}, Standort {new_site} besteht für das Berichtsjahr "
                f"{reg.year} bereits eine Registrierung; jeder Bericht wird nur einmal "
                "registriert."
            )
    before = {"ik": reg.ik, "site": reg.site}
    reg.ik, reg.site = new_ik, new_site
    reg.corrected_at = reg.updated_at = now
    await audit.record(
        session,
        actor,
        "qb.registration.correct",
        at=now,
        target=new_ik,
        details={
            "registration": reg.id,
            "year": reg.year,
            "before": before,
            "after": {"ik": new_ik, "site": new_site},
            "changed": changed,
        },
    )
    return changed


async def pending(session: AsyncSession, now: datetime, token: str) -> QbRegistration | None:
    """The registration a correction link is for while the link holds (not used up)."""
    row = await tokens.find(session, TokenPurpose.QB_CORRECT, token, now)
    if row is None or row.qb_registration_id is None:
        return None
    return await session.get(QbRegistration, row.qb_registration_id)


async def correct_by_link(
    session: AsyncSession,
    now: datetime,
    token: str,
    *,
    ik: str,
    site: str,
    qb: QbSettings,
    registration: RegistrationSettings,
    notifier: Notifier,
) -> QbRegistration:
    """The hospital corrects (or keeps) IK and Standort by its mailed link; the link is
    used up with a correction that stands (a refused one leaves it usable). The
    registration's account follows the new IK and Standort (``accounts.follow_identity``)."""
    row = await tokens.consume(session, TokenPurpose.QB_CORRECT, token, now)
    reg = await session.get_one(QbRegistration, row.qb_registration_id, with_for_update=True)
    if await change_identity(session, Actor(reg.ik, "web"), now, reg, ik=ik, site=site, qb=qb):
        await qb_accounts.follow_identity(session, now, reg, registration, notifier)
    return reg
