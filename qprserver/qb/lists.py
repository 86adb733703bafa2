"""The lists of a report year for the G-BA, the QS-Stellen and the operator (Qb-R § 8,
Anlage 2 and 3): the registrations, the final delivery list (reports accepted, in their
latest version), who is missing (on the positive list without an accepted report;
registered but not on the list), and the year at a glance. Rows are plain dicts, as
the CLI prints them."""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from qprserver.accounts.enums import RegistrationState
from qprserver.db.models import (
    Document,
    Outcome,
    QbC1Delivery,
    QbPositiveListEntry,
    QbRegistration,
    UploadProtocol,
)
from qprserver.qb.c1 import C1_KIND
from qprserver.qb.filename import parse_report_name

QUALITY_REPORT = "qualitaetsbericht"


def _of_year(column: InstrumentedAttribute[str], year: int) -> ColumnElement[bool]:
    # Hospital parts are named <IK>-<SO>-<Y>-xml.xml; the year is a bound parameter.
    return column.like(f"%-{year}-xml.xml")


async def _registered(session: AsyncSession, year: int) -> dict[tuple[str, str], QbRegistration]:
    rows = await session.scalars(
        select(QbRegistration)
        .where(QbRegistration.year == year)
        .order_by(QbRegistration.ik, QbRegistration.site)
    )
    return {(r.ik, r.site): r for r in rows}


async def registrations(session: AsyncSession, year: int) -> list[dict[str, object]]:
    """Every registration of ``year``, for the QS-Stellen to compare with their lists."""
    return [
        {
            "ik": reg.ik,
            "standort": reg.site,
            "name": reg.hospital,
            "kontakt": reg.contact,
            "email": reg.email,
            "telefon": reg.phone,
            "zulassung": reg.basis,
            "weitere_iks": reg.further_iks.replace(",", " "),
            "status": reg.state.label,
            "nachregistriert": reg.late,
            "registriert": reg.created_at.isoformat(),
        }
        for reg in (await _registered(session, year)).values()
    ]


async def delivery_list(session: AsyncSession, year: int) -> list[dict[str, object]]:
    """Hospitals and sites with an accepted report of ``year`` (latest version)."""
    registered = await _registered(session, year)
    documents = await session.execute(
        select(Document.name, Document.version, Document.uploaded_at)
        .where(
            Document.kind == QUALITY_REPORT,
            Document.current.is_(True),
            _of_year(Document.name, year),
        )
        .order_by(Document.name)
    )
    rows: list[dict[str, object]] = []
    for name, version, uploaded_at in documents:
        report = parse_report_name(name)
        if report is None or report.year != year:
            continue
        reg = registered.get((report.ik, report.site))
        rows.append(
            {
                "ik": report.ik,
                "standort": report.site,
                "name": reg.hospital if reg is not None else "",
                "datei": name,
                "version": version,
                "angenommen": uploaded_at.isoformat(),
            }
        )
    return rows


async def missing(session: AsyncSession, year: int) -> list[dict[str, object]]:
    """Reports on the positive list without an accepted report, and confirmed
    registrations not on the list, each with the reason."""
    delivered = {(str(r["ik"]), str(r["standort"])) for r in await delivery_list(session, year)}
    listed = {
        (e.ik, e.site): e
        for e in await session.scalars(
            select(QbPositiveListEntry).where(QbPositiveListEntry.year == year)
        )
    }
    rows: list[dict[str, object]] = [
        {"ik": ik, "standort": site, "name": e.name, "grund": "kein angenommener Bericht"}
        for (ik, site), e in sorted(listed.items())
        if (ik, site) not in delivered
    ]
    rows += [
        {
            "ik": ik,
            "standort": site,
            "name": reg.hospital,
            "grund": "registriert, nicht auf der Positivliste",
        }
        for (ik, site), reg in sorted((await _registered(session, year)).items())
        if reg.state is RegistrationState.BESTAETIGT and (ik, site) not in listed
    ]
    return rows


async def status(session: AsyncSession, year: int) -> dict[str, int]:
    """The year at a glance: counts of registrations (with the correction phase and the
    confirmation mails), deliveries, C-1 parts (Null-Meldungen among them; current
    versions) and the lists."""
    registrations = list((await _registered(session, year)).values())
    protocols = (
        await session.execute(
            select(UploadProtocol.outcome, func.count(UploadProtocol.id))
            .where(_of_year(UploadProtocol.upload_name, year))
            .group_by(UploadProtocol.outcome)
        )
    ).all()
    outcomes = {str(outcome): int(count) for outcome, count in protocols}
    replaced = await session.scalar(
        select(func.count(Document.id)).where(
            Document.kind == QUALITY_REPORT,
            Document.current.is_(False),
            _of_year(Document.name, year),
        )
    )
    listed = await session.scalar(
        select(func.count(QbPositiveListEntry.id)).where(QbPositiveListEntry.year == year)
    )
    c1_received = await session.scalar(
        select(func.count(Document.id)).where(
            Document.kind == C1_KIND,
            Document.current.is_(True),
            or_(Document.name.like(f"%-{year}-Land.xml"), Document.name.like(f"%-{year}-bund.xml")),
        )
    )
    null_reports = await session.scalar(
        select(func.count(QbC1Delivery.id))
        .join(Document, Document.id == QbC1Delivery.document_id)
        .where(
            QbC1Delivery.year == year,
            QbC1Delivery.null_report.is_(True),
            Document.current.is_(True),
        )
    )
    return {
        "registriert": len(registrations),
        "bestaetigt": sum(r.state is RegistrationState.BESTAETIGT for r in registrations),
        "nachregistriert": sum(r.late for r in registrations),
        "abweichung_gemeldet": sum(r.mismatch_at is not None for r in registrations),
        "korrigiert": sum(r.corrected_at is not None for r in registrations),
        "bestaetigung_versandt": sum(r.confirmation_sent_at is not None for r in registrations),
        "geliefert": sum(outcomes.values()),
        "angenommen": len(await delivery_list(session, year)),
        "abgelehnt": outcomes.get(Outcome.REJECTED, 0),
        "ersetzt": replaced or 0,
        "erinnert": sum(r.reminded_at is not None for r in registrations),
        "c1_erhalten": c1_received or 0,
        "null_meldungen": null_reports or 0,
        "positivliste": listed or 0,
        "fehlend": len(await missing(session, year)),
    }
