"""The reminder 14 days before the hospital deadline (Qb-R § 6): every confirmed
registration of the year without an accepted report gets one mail.

Exactly once per registration and year, however often and on however many nodes the
job runs: the registration's ``reminded_at`` is set by a conditional update (of two
concurrent runs, one changes the row and the other finds it set), and the mail is
queued in the same transaction under a key naming the registration and year, which the
outbox never sends twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import RegistrationState
from qprserver.config import QbSettings
from qprserver.db.models import Document, QbRegistration
from qprserver.notify import qb_mails as mails
from qprserver.notify.outbox import Notifier
from qprserver.qb.calendar import calendar_for, local_day

QUALITY_REPORT = "qualitaetsbericht"


def reminder_years(qb: QbSettings, now: datetime) -> list[int]:
    """The report years whose hospital reminder is due at ``now`` (from the reminder day
    to the deadline)."""
    day = local_day(qb, now)
    candidates = {day.year - 1, *(int(y) for y in qb.years)}
    return sorted(
        y
        for y in candidates
        if (cal := calendar_for(qb, y)).hospital_reminder <= day <= cal.hospital.end
    )


async def remind(session: AsyncSession, now: datetime, qb: QbSettings, notifier: Notifier) -> int:
    """Queue the due reminders; how many were queued by this run."""
    sent = 0
    for year in reminder_years(qb, now):
        deadline = calendar_for(qb, year).hospital.end
        # An accepted report is a current document named <IK>-<SO>-<Y>-xml.xml.
        accepted = exists().where(
            Document.kind == QUALITY_REPORT,
            Document.current.is_(True),
            Document.name == QbRegistration.ik + "-" + QbRegistration.site + f"-{year}-xml.xml",
        )
        due = (
            await session.scalars(
                select(QbRegistration)
                .where(
                    QbRegistration.year == year,
                    QbRegistration.state == RegistrationState.BESTAETIGT,
                    QbRegistration.reminded_at.is_(None),
                    ~accepted,
                )
                .order_by(QbRegistration.id)
            )
        ).all()
        for reg in due:
            claimed = await session.execute(
                update(QbRegistration)
                .where(QbRegistration.id == reg.id, QbRegistration.reminded_at.is_(None))
                .values(reminded_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another run reminded it meanwhile
            queued = await notifier.queue_to(
                session,
                key=f"qb-reminder:{year}:{reg.id}",
                email=mails.qb_reminder(
                    year, reg.ik, reg.site, reg.hospital, reg.contact, f"{deadline:%d.%m.%Y}"
                ),
                to_addr=reg.email,
                now=now,
                account_id=reg.account_id,
            )
            sent += int(queued)
    return sent
