"""The CSV files an operator imports for a report year (the G-BA's positive list, the
QS-Stellen's mismatches): UTF-8 (a BOM is allowed), ``;``-separated, a header row naming
the columns in any order and any case, one report per row. Every bad row is named by its
line, and a file with any bad row changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qprserver.errors import InvalidInput
from qprserver.ik import IK

_SITE = re.compile(r"[0-9]{2}|[0-9]{6}")
# Bad rows named in one error, at most; the count says how many more.
SHOWN = 20


@dataclass
class Rows:
    """The rows of a file as ``{column: value}`` by line, and the bad rows found so far."""

    what: str
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)

    def bad(self, line: int, message: str) -> None:
        self.errors.append((line, message))

    def report(self, line: int, value: Mapping[str, str]) -> tuple[str, str] | None:
        """IK and Standort of a row (``ik``, ``standort``), checked and not repeated;
        None (and the row noted as bad) otherwise."""
        try:
            ik = IK.parse(value["ik"]).value
        except InvalidInput as exc:
            self.bad(line, str(exc))
            return None
        site = value["standort"]
        if not _SITE.fullmatch(site):
            self.bad(line, f"Standort {site!r} is neither two nor six digits")
            return None
        if (ik, site) in self._seen:
            self.bad(line, f"IK {ik} Standort {site} repeats line {self._seen[ik, site]}")
            return None
        self._seen[ik, site] = line
        return ik, site

    def refuse_if_bad(self) -> None:
        """InvalidInput naming every bad row by its line, when there is one."""
        if not self.errors:
            return
        errors = [f"line {line}: {message}" for line, message in sorted(self.errors)]
        more = f"; and {len(errors) - SHOWN} more" if len(errors) > SHOWN else ""
        raise InvalidInput(
            f"{self.what}: {len(errors)} bad rows, nothing imported: "
            + "; ".join(errors[:SHOWN])
            + more
        )


def read(
    data: bytes,
    what: str,
    columns: Sequence[str],
    header: str,
    aliases: Mapping[str, str] | None = None,
) -> Rows:
    """The non-empty rows of a file with ``columns`` (lower case); ``header`` shows the
    header the error asks for, ``aliases`` maps other names of a column to it."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what}: not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    names = [cell.strip().lower() for cell in next(reader, [])]
    names = [(aliases or {}).get(name, name) for name in names]
    missing = [c for c in columns if c not in names]
    if missing:
        raise InvalidInput(
            f"{what}: line 1: header needs the columns {header} (missing: {', '.join(missing)})"
        )
    where = {column: names.index(column) for column in columns}
    found = Rows(what)
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(names):
            found.bad(line, f"{len(row)} columns, expected {len(names)}")
            continue
        found.rows.append((line, {column: row[index].strip() for column, index in where.items()}))
    return found
