"""The confirmation of the registrations after the correction phase (Qb-R Anlage 2
Nr. 6, and Nr. 8 for late ones): from the day after the phase to the day after the
replacement window, every confirmed registration of the year gets one mail with the
data registered (IK and Standort now fixed). A registration confirmed later (a late
one) gets its mail on the next daily run.

Exactly once per registration and year, however often and on however many nodes the
job runs, as the reminders (``reminders.py``): ``confirmation_sent_at`` is set by a
conditional update (of two concurrent runs one changes the row, the other finds it
set), and the mail is queued in the same transaction under a key naming the
registration and year, which the outbox never sends twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import RegistrationState
from qprserver.config import QbSettings
from qprserver.db.models import QbRegistration
from qprserver.notify import qb_mails as mails
from qprserver.notify.emails import Email
from qprserver.notify.outbox import Notifier
from qprserver.qb.calendar import calendar_for, local_day
from qprserver.qb.reminders import mail_each_once


def confirmation_years(qb: QbSettings, now: datetime) -> list[int]:
    """The report years whose registrations are confirmed by mail at ``now`` (from the
    day after the correction phase to the day after the replacement window)."""
    day = local_day(qb, now)
    candidates = {day.year - 1, *(int(y) for y in qb.years)}
    return sorted(
        y
        for y in candidates
        if (cal := calendar_for(qb, y)).confirmation <= day <= cal.final_bundle
    )


async def confirm_registrations(
    session: AsyncSession, now: datetime, qb: QbSettings, notifier: Notifier
) -> int:
    """Queue the due confirmation mails; how many this run queued."""
    sent = 0
    for year in confirmation_years(qb, now):
        due = (
            await session.scalars(
                select(QbRegistration)
                .where(
                    QbRegistration.year == year,
                    QbRegistration.state == RegistrationState.BESTAETIGT,
                    QbRegistration.confirmation_sent_at.is_(None),
                )
                .order_by(QbRegistration.id)
            )
        ).all()
        sent += await mail_each_once(
            session,
            notifier,
            now,
            due,
            QbRegistration.confirmation_sent_at,
            key=f"qb-registration-confirmed:{year}",
            email=_confirmation(year),
        )
    return sent


def _confirmation(year: int) -> Callable[[QbRegistration], Email]:
    def email(reg: QbRegistration) -> Email:
        return mails.qb_registration_confirmed(
            year,
            reg.ik,
            reg.site,
            reg.hospital,
            contact=reg.contact,
            email=reg.email,
            phone=reg.phone,
            basis=reg.basis.capitalize(),
            further_iks=reg.further_iks.replace(",", ", "),
            late=reg.late,
        )

    return email
