"""The file name of a quality report: ``<IK>-<Standort>-<Berichtsjahr>-xml.xml``."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Two-digit site numbers up to report year 2019; later years use the six-digit number
# of the Standortverzeichnis, so both are accepted here and the rules compare exactly.
_NAME = re.compile(r"(?P<ik>\d{9})-(?P<site>\d{2}|\d{6})-(?P<year>\d{4})-xml\.xml")

PATTERN_TEXT = "<IK>-<Standort>-<Berichtsjahr>-xml.xml"


@dataclass(frozen=True, slots=True)
class ReportName:
    """The parts of a well-formed report file name (the IK is not yet validated)."""

    ik: str
    site: str
    year: int


def parse_report_name(filename: str) -> ReportName | None:
    """The parts of filename, or None when it does not follow the pattern."""
    match = _NAME.fullmatch(filename)
    if match is None:
        return None
    return ReportName(match["ik"], match["site"], int(match["year"]))
