"""Delivery windows of quality reports per report year (Qb-R: main delivery, part C-1,
replacements). Dates are calendar days in the configured time zone, both ends included;
a report year without configured windows accepts no deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from qprserver.config import QbSettings

LABELS = {"main": "Hauptlieferung", "c1": "Teil C-1", "replacement": "Ersatzlieferung"}


@dataclass(frozen=True, slots=True)
class Window:
    """One delivery window."""

    name: str
    start: date
    end: date

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def __str__(self) -> str:
        return f"{self.label} {self.start:%d.%m.%Y}–{self.end:%d.%m.%Y}"


def windows_for(settings: QbSettings, year: int) -> list[Window]:
    """The configured windows of a report year, earliest first."""
    configured = settings.windows.get(str(year))
    if configured is None:
        return []
    windows = [
        Window(name, span.start, span.end)
        for name in LABELS
        if (span := getattr(configured, name)) is not None
    ]
    return sorted(windows, key=lambda w: (w.start, w.end))


def _day(settings: QbSettings, at: datetime) -> date:
    if at.tzinfo is None:
        raise ValueError("windows need a timezone-aware time")
    return at.astimezone(ZoneInfo(settings.timezone)).date()


def open_windows(settings: QbSettings, year: int, at: datetime) -> list[Window]:
    """The windows of a report year that are open at the given time."""
    day = _day(settings, at)
    return [w for w in windows_for(settings, year) if w.start <= day <= w.end]


def windows_open(settings: QbSettings, year: int, at: datetime) -> bool:
    """True when at least one delivery window of the report year is open at the time."""
    return bool(open_windows(settings, year, at))


def windows_message(settings: QbSettings, year: int) -> str:
    """Names the windows of a report year, for a refused delivery."""
    windows = windows_for(settings, year)
    if not windows:
        return (
            f"Für das Berichtsjahr {year} ist keine Lieferfrist eingerichtet; "
            "Berichte dieses Jahres werden nicht angenommen."
        )
    listed = ", ".join(str(w) for w in windows)
    return (
        f"Lieferfristen für das Berichtsjahr {year}: {listed}. "
        "Außerhalb dieser Fristen werden keine Berichte angenommen."
    )
