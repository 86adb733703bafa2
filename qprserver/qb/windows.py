"""Whether a hospital may deliver a report of a year now: in the hospital window or the
replacement window of that year's calendar (``calendar.py``); dates are calendar days
in the configured time zone, both ends included.
"""

from __future__ import annotations

from datetime import datetime

from qprserver.config import QbSettings
from qprserver.qb.calendar import Window, calendar_for, local_day


def open_windows(settings: QbSettings, year: int, at: datetime) -> list[Window]:
    """The delivery windows of a report year that are open at the given time."""
    day = local_day(settings, at)
    return [w for w in calendar_for(settings, year).delivery_windows() if day in w]


def windows_open(settings: QbSettings, year: int, at: datetime) -> bool:
    """True when a delivery window of the report year is open at the time."""
    return bool(open_windows(settings, year, at))


def windows_message(settings: QbSettings, year: int) -> str:
    """Names the delivery windows of a report year, for a refused delivery."""
    listed = ", ".join(str(w) for w in calendar_for(settings, year).delivery_windows())
    return (
        f"Lieferfristen für das Berichtsjahr {year}: {listed}. "
        "Außerhalb dieser Fristen werden keine Berichte angenommen."
    )
