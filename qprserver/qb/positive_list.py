"""The G-BA's positive list of a report year (Anlage 3 § 3): the reports owed, by IK and
Standortnummer, imported from CSV. A file with any bad row changes nothing; the error
names every bad row by its line. A good file replaces the year's list.

Format: UTF-8 (a BOM is allowed), ``;``-separated, a header row with the columns
``IK;Standort;Name;Adresse`` (any order, any case), one report per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.models import QbPositiveListEntry
from qprserver.qb import csvrows

COLUMNS = ("ik", "standort", "name", "adresse")


@dataclass(frozen=True, slots=True)
class Entry:
    """One report on the positive list."""

    ik: str
    site: str
    name: str
    address: str


def parse(data: bytes) -> list[Entry]:
    """The entries of a positive-list file, or InvalidInput naming every bad row."""
    found = csvrows.read(data, "positive list", COLUMNS, "IK;Standort;Name;Adresse")
    entries: list[Entry] = []
    for line, value in found.rows:
        if not value["name"]:
            found.bad(line, "name is empty")
            continue
        key = found.report(line, value)
        if key is not None:
            entries.append(Entry(*key, value["name"][:200], value["adresse"][:300]))
    found.refuse_if_bad()
    return entries


async def replace(
    session: AsyncSession, actor: Actor, now: datetime, year: int, entries: list[Entry]
) -> int:
    """Make ``entries`` the positive list of ``year``; how many rows it now has."""
    await session.execute(delete(QbPositiveListEntry).where(QbPositiveListEntry.year == year))
    session.add_all(
        QbPositiveListEntry(
            year=year, ik=e.ik, site=e.site, name=e.name, address=e.address, imported_at=now
        )
        for e in entries
    )
    await audit.record(
        session,
        actor,
        "qb.positive_list.import",
        at=now,
        target=str(year),
        details={"year": year, "rows": len(entries)},
    )
    return len(entries)
