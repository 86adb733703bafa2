"""The reminders 14 days before the deadlines (Qb-R § 6): every confirmed registration
of the year without an accepted report gets one mail before the hospital deadline;
before the C-1 deadline every QS-Stelle (role ``qs-stelle``; with a Land: that Land's
hospitals and ``-Land.xml``, without: all and ``-bund.xml``) gets one mail listing the
reports registered for C-1 that still lack its data.

Exactly once per registration and year, however often and on however many nodes the
job runs: the registration's ``reminded_at`` is set by a conditional update (of two
concurrent runs, one changes the row and the other finds it set), and the mail is
queued in the same transaction under a key naming the registration and year, which the
outbox never sends twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from qprserver.accounts.enums import RegistrationState, Role
from qprserver.config import QbSettings
from qprserver.db.models import Account, Document, QbRegistration
from qprserver.ik import IK
from qprserver.notify import qb_mails as mails
from qprserver.notify.emails import Email
from qprserver.notify.outbox import Notifier
from qprserver.qb.c1 import C1_KIND
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
        sent += await mail_each_once(
            session,
            notifier,
            now,
            due,
            QbRegistration.reminded_at,
            key=f"qb-reminder:{year}",
            email=_reminder(year, f"{deadline:%d.%m.%Y}"),
        )
    return sent


def _reminder(year: int, deadline: str) -> Callable[[QbRegistration], Email]:
    def email(reg: QbRegistration) -> Email:
        return mails.qb_reminder(year, reg.ik, reg.site, reg.hospital, reg.contact, deadline)

    return email


async def mail_each_once(
    session: AsyncSession,
    notifier: Notifier,
    now: datetime,
    due: Sequence[QbRegistration],
    mark: InstrumentedAttribute[datetime | None],
    *,
    key: str,
    email: Callable[[QbRegistration], Email],
) -> int:
    """Queue one mail per registration exactly once: the registration's ``mark`` column
    is claimed by a conditional update (NULL → now) first, so a run on another node or
    process that got there before skips it, and the mail's dedupe key
    (``<key>:<registration id>``) makes a queued mail stay one. The number queued."""
    sent = 0
    for reg in due:
        claimed = await session.execute(
            update(QbRegistration)
            .where(QbRegistration.id == reg.id, mark.is_(None))
            .values({mark: now})
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another run claimed it meanwhile
        queued = await notifier.queue_to(
            session,
            key=f"{key}:{reg.id}",
            email=email(reg),
            to_addr=reg.email,
            now=now,
            account_id=reg.account_id,
        )
        sent += int(queued)
    return sent


def c1_reminder_years(qb: QbSettings, now: datetime) -> list[int]:
    """The report years whose C-1 reminder is due at ``now`` (reminder day to deadline)."""
    day = local_day(qb, now)
    candidates = {day.year - 1, *(int(y) for y in qb.years)}
    return sorted(
        y for y in candidates if (cal := calendar_for(qb, y)).c1_reminder <= day <= cal.c1.end
    )


async def remind_qs_stellen(
    session: AsyncSession, now: datetime, qb: QbSettings, notifier: Notifier
) -> int:
    """Queue the due C-1 reminders, one per QS-Stelle and year; how many were queued."""
    sent = 0
    stellen = [
        a
        for a in await session.scalars(select(Account).order_by(Account.id))
        if a.active and a.has_role(Role.QS_STELLE)
    ]
    for year in c1_reminder_years(qb, now):
        calendar = calendar_for(qb, year)
        registered = (
            await session.scalars(
                select(QbRegistration)
                .where(
                    QbRegistration.year == year,
                    QbRegistration.state == RegistrationState.BESTAETIGT,
                    QbRegistration.late.is_(False),
                )
                .order_by(QbRegistration.ik, QbRegistration.site)
            )
        ).all()
        received = set(
            await session.scalars(
                select(Document.name).where(
                    Document.kind == C1_KIND,
                    Document.current.is_(True),
                )
            )
        )
        for stelle in stellen:
            part = "Land" if stelle.land else "bund"
            lacking = [
                f"IK {reg.ik}, Standort {reg.site}: {reg.hospital}"
                for reg in registered
                if (stelle.land is None or IK(reg.ik).land == stelle.land)
                and f"{reg.ik}-{reg.site}-{year}-{part}.xml" not in received
            ]
            if not lacking or not stelle.email:
                continue
            queued = await notifier.queue_to(
                session,
                key=f"qb-c1-reminder:{year}:{stelle.id}",
                email=mails.qb_c1_reminder(
                    year, stelle.ik, stelle.name, f"{calendar.c1.end:%d.%m.%Y}", lacking
                ),
                to_addr=stelle.email,
                now=now,
                account_id=stelle.id,
            )
            sent += int(queued)
    return sent
