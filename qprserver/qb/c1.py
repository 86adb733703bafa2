"""Part C-1 of the quality reports, delivered by the QS-Stellen of Land and Bund
(Qb-R § 6): ``<IK>-<SO>-<Y>-Land.xml`` and ``<IK>-<SO>-<Y>-bund.xml``.

A C-1 file is accepted only from an account with role ``qs-stelle``, within the C-1
window of the year's calendar, and for a report whose registration is confirmed and was
made by the end of the registration window (at least 12 weeks before the hospital
deadline; a late registration gets no C-1 data). The file passed the safe XML parse of
every upload; then, where ``[qb.years.<Y>] c1_schema`` names one, it is checked against
that XML schema, and any schema error rejects it (else its protocol says that only the
safe parse ran). A QS-Stelle without QS data for a hospital delivers a Null-Meldung
under the same name: the single element
``<NullMeldung IK="260100023" Standort="01" Berichtsjahr="2019" Teil="Land"/>``
whose attributes repeat the file name's parts (no schema applies to it). Every accepted
C-1 document is recorded (``QbC1Delivery``), Null-Meldungen marked, for the year's counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from datetime import datetime
from typing import Any, cast

from lxml import etree
from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import RegistrationState, Role
from qprserver.config import QbSettings
from qprserver.db.models import QbC1Delivery, QbRegistration
from qprserver.errors import ConfigError
from qprserver.qb.calendar import calendar_for, local_day
from qprserver.qb.engine import QbResult
from qprserver.qb.protocol import UNAVAILABLE, UNAVAILABLE_ADVICE
from qprserver.qb.schema import load_schema

log = logging.getLogger(__name__)

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


def _protocol(name: str, match: re.Match[str], **fields: Any) -> dict[str, Any]:
    part = match["part"]
    return {
        "datei": name,
        "berichtsjahr": int(match["year"]),
        "ik": match["ik"],
        "standort": match["site"],
        "teil": part.capitalize(),
        **fields,
    }


def check(name: str, tree: etree._ElementTree | None, qb: QbSettings) -> QbResult:
    """The content check of a C-1 file that ``refusal`` let pass (blocking: run it in a
    thread): a Null-Meldung as it is; else the year's C-1 schema where configured, the
    safe parse alone where not. The protocol says which."""
    match = _NAME.fullmatch(name)
    if match is None:  # refusal() refuses such a name first
        raise ValueError(f"not a C-1 file name: {name}")
    year = int(match["year"])
    root = tree.getroot() if tree is not None else None
    if root is not None and root.tag == NULL_REPORT:
        protocol = _protocol(
            name,
            match,
            ergebnis="angenommen",
            null_meldung=True,
            pruefung="Null-Meldung: Form und Angaben geprüft",
            schema=None,
            befunde=[],
        )
        return QbResult(True, (), protocol, f"Null-Meldung {name} angenommen\n", "")
    configured = qb.years.get(str(year))
    schema_file = configured.c1_schema if configured is not None else None
    if schema_file is None or tree is None:
        protocol = _protocol(
            name,
            match,
            ergebnis="angenommen",
            null_meldung=False,
            pruefung=(
                "nur sichere XML-Prüfung: für Teil C-1 des Berichtsjahres "
                f"{year} ist kein XML-Schema hinterlegt"
            ),
            schema=None,
            befunde=[],
        )
        return QbResult(True, (), protocol, f"Teil C-1 {name} angenommen\n", "")
    try:
        schema = load_schema(schema_file, f"qb.years.{year}.c1_schema")
    except ConfigError as exc:
        log.warning("C-1 file %s not checked (%s): %s", name, UNAVAILABLE, exc)
        reason = (
            f"Teil C-1 {name}: {UNAVAILABLE}, nicht angenommen; "
            "bitte später unverändert erneut liefern"
        )
        protocol = _protocol(
            name,
            match,
            ergebnis=UNAVAILABLE,
            null_meldung=False,
            pruefung=UNAVAILABLE,
            schema=schema_file.name,
            befunde=[],
            hinweis=UNAVAILABLE_ADVICE,
        )
        return QbResult(False, (), protocol, reason + "\n", reason, unavailable=True)
    checked = schema.validate(tree, year)
    accepted = checked.total == 0
    protocol = _protocol(
        name,
        match,
        ergebnis="angenommen" if accepted else "abgelehnt",
        null_meldung=False,
        pruefung=f"sichere XML-Prüfung und XML-Schema {schema_file.name}",
        schema=schema_file.name,
        befunde=[f.to_dict() for f in checked.findings],
        nicht_aufgefuehrt=checked.total - len(checked.findings),
    )
    if accepted:
        return QbResult(True, (), protocol, f"Teil C-1 {name} angenommen\n", "")
    first = checked.findings[0]
    where = f" ({first.where})" if first.where else ""
    more = f"; {checked.total - 1} weitere Schemafehler" if checked.total > 1 else ""
    reason = (
        f"Teil C-1 {name} abgelehnt: XML-Schema {schema_file.name}: {first.message}{where}{more}"
    )
    return QbResult(False, checked.findings, protocol, reason + "\n", reason)


def record(conn: Connection, document_id: int, result: QbResult, now: datetime) -> None:
    """Note an accepted C-1 document, in the acceptance's transaction: its report, part,
    and whether a Null-Meldung."""
    protocol = result.protocol
    conn.execute(
        insert(cast(Table, QbC1Delivery.__table__)),
        {
            "document_id": document_id,
            "year": protocol["berichtsjahr"],
            "ik": protocol["ik"],
            "site": protocol["standort"],
            "part": "Land" if protocol["teil"] == "Land" else "bund",
            "null_report": bool(protocol["null_meldung"]),
            "created_at": now,
        },
    )
