"""The G-BA's positive list of a report year (Anlage 3 § 3): the reports owed, by IK and
Standortnummer, imported from CSV. A file with any bad row changes nothing; the error
names every bad row by its line. A good file replaces the year's list.

Format: UTF-8 (a BOM is allowed), ``;``-separated, a header row with the columns
``IK;Standort;Name;Adresse`` (any order, any case), one report per row.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db.models import QbPositiveListEntry
from qprserver.errors import InvalidInput
from qprserver.ik import IK

COLUMNS = ("ik", "standort", "name", "adresse")
_SITE = re.compile(r"[0-9]{2}|[0-9]{6}")
# Bad rows named in one error, at most; the count says how many more.
_SHOWN = 20


@dataclass(frozen=True, slots=True)
class Entry:
    """One report on the positive list."""

    ik: str
    site: str
    name: str
    address: str


def parse(data: bytes) -> list[Entry]:
    """The entries of a positive-list file, or InvalidInput naming every bad row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("positive list: not UTF-8") from None
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header = [cell.strip().lower() for cell in next(rows, [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InvalidInput(
            f"positive list: line 1: header needs the columns IK;Standort;Name;Adresse "
            f"(missing: {', '.join(missing)})"
        )
    where = {column: header.index(column) for column in COLUMNS}
    entries: list[Entry] = []
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            errors.append(f"line {line}: {len(row)} columns, expected {len(header)}")
            continue
        value = {column: row[index].strip() for column, index in where.items()}
        try:
            ik = IK.parse(value["ik"]).value
        except InvalidInput as exc:
            errors.append(f"line {line}: {exc}")
            continue
        if not _SITE.fullmatch(value["standort"]):
            errors.append(
                f"line {line}: Standort {value['standort']!r} is neither two nor six digits"
            )
            continue
        if not value["name"]:
            errors.append(f"line {line}: name is empty")
            continue
        key = (ik, value["standort"])
        if key in seen:
            errors.append(f"line {line}: IK {ik} Standort {key[1]} repeats line {seen[key]}")
            continue
        seen[key] = line
        entries.append(Entry(ik, key[1], value["name"][:200], value["adresse"][:300]))
    if errors:
        more = f"; and {len(errors) - _SHOWN} more" if len(errors) > _SHOWN else ""
        raise InvalidInput(
            f"positive list: {len(errors)} bad rows, nothing imported: "
            + "; ".join(errors[:_SHOWN])
            + more
        )
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
