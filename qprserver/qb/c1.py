"""Part C-1 of the quality reports, delivered by the QS-Stellen of Land and Bund
(Qb-R § 6): ``<IK>-<SO>-<Y>-Land.xml`` and ``<IK>-<SO>-<Y>-bund.xml``.

A C-1 file is accepted only from an account with role ``qs-stelle``, within the C-1
window of the year's calendar, and for a report whose registration is confirmed and was
made by the end of the registration window (at least 12 weeks before the hospital
deadline; a late registration gets no C-1 data). The file passed the safe XML parse of
every upload. A QS-Stelle without QS data for a hospital delivers a Null-Meldung under
the same name: the single element
``<NullMeldung IK="260100023" Standort="01" Berichtsjahr="2019" Teil="Land"/>``
whose attributes repeat the file name's parts.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime

from lxml import etree
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import RegistrationState, Role
from qprserver.config import QbSettings
from qprserver.db.models import QbRegistration
from qprserver.qb.calendar import calendar_for, local_day

C1_KIND = "qb_c1"
NULL_REPORT = "NullMeldung"
_NAME = re.compile(r"(?P<ik>\d{9})-(?P<site>\d{2}|\d{6})-(?P<year>\d{4})-(?P<part>Land|bund)\.xml")


def _null_report_mismatch(root: etree._Element, ik: str, site: str, year: str, part: str) -> str:
    expected = {"IK": ik, "Standort": site, "Berichtsjahr": year, "Teil": part.capitalize()}
    wrong = [key for key, value in expected.items() if root.get(key) != value]
    if not wrong and len(root) == 0:
        return ""
    named = ", ".join(f'{key}="{value}"' for key, value in expected.items())
    return f"Null-Meldung: erwartet wird <{NULL_REPORT} {named}/> (abweichend: {', '.join(wrong)})."


async def refusal(
    session: AsyncSession,
    qb: QbSettings,
    roles: Collection[Role],
    name: str,
    tree: etree._ElementTree | None,
    now: datetime,
) -> str | None:
    """None when the C-1 file may be accepted; else the German reason it is refused."""
    if Role.QS_STELLE not in roles:
        return "Teil C-1 liefern nur QS-Stellen (Konten mit der Rolle qs-stelle)."
    match = _NAME.fullmatch(name)
    if match is None:
        return "Dateiname: erwartet <IK>-<Standort>-<Berichtsjahr>-Land.xml oder -bund.xml."
    ik, site, year = match["ik"], match["site"], int(match["year"])
    calendar = calendar_for(qb, year)
    if local_day(qb, now) not in calendar.c1:
        return f"{calendar.c1} ({year}): außerhalb dieser Frist wird Teil C-1 nicht angenommen."
    registration = await session.scalar(
        select(QbRegistration).where(
            QbRegistration.year == year,
            QbRegistration.ik == ik,
            QbRegistration.site == site,
            QbRegistration.state == RegistrationState.BESTAETIGT,
        )
    )
    if registration is None or registration.late:
        return (
            f"IK {ik}, Standort {site} ist für das Berichtsjahr {year} nicht bis zum "
            f"{calendar.registration.end:%d.%m.%Y} registriert; für diesen Bericht wird "
            "Teil C-1 nicht angenommen."
        )
    root = tree.getroot() if tree is not None else None
    if root is not None and root.tag == NULL_REPORT:
        return _null_report_mismatch(root, ik, site, str(year), match["part"]) or None
    return None
