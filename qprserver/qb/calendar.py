"""The calendar of one report year (Qb-R § 6, Anlage 2), computed from its three
deadline windows in ``[qb.years.<Y>]``; a window not configured gets the regulation's
dates. Report year Y is delivered in Y+1:

- hospital parts 15 Oct–15 Nov, part C-1 15 Nov–15 Dec, replacements 23 Nov–15 Dec;
- registration opens 18 weeks and closes 12 weeks before the hospital deadline; late
  registration is possible within the replacement window; C-1 data is taken only for
  hospitals registered by the close of the registration window (≥ 12 weeks before);
- the correction phase follows the registration window: ``correction_days`` of
  ``[qb.years.<Y>]`` long, 28 by default and at most (Qb-R Anlage 2 Nr. 5: "maximal
  vierwöchig"); the registrations' confirmation mails go from the day after it;
- reminders 14 days before the hospital and the C-1 deadline;
- the final bundle (§ 6 (5)) on the day after the replacement window.

All dates are calendar days in ``qb.timezone``, both ends of a window included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from qprserver.config import DateRange, QbSettings

REGISTRATION_OPENS = timedelta(weeks=18)
REGISTRATION_CLOSES = timedelta(weeks=12)
REMINDER_BEFORE = timedelta(days=14)
CORRECTION_DAYS = 28


@dataclass(frozen=True, slots=True)
class Window:
    """A span of calendar days, both ends included."""

    name: str
    label: str
    start: date
    end: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.label} {self.start:%d.%m.%Y}–{self.end:%d.%m.%Y}"


@dataclass(frozen=True, slots=True)
class YearCalendar:
    """Every date of one report year, from its three deadline windows."""

    year: int
    hospital: Window
    c1: Window
    replacement: Window
    # True when ``[qb.years.<Y>]`` exists; else the regulation's dates.
    configured: bool
    correction_days: int = CORRECTION_DAYS

    @property
    def registration(self) -> Window:
        """Registration: 18 to 12 weeks before the hospital deadline."""
        deadline = self.hospital.end
        return Window(
            "registration",
            "Registrierung",
            deadline - REGISTRATION_OPENS,
            deadline - REGISTRATION_CLOSES,
        )

    @property
    def correction(self) -> Window:
        """The correction phase: from the day after the registration window, on
        ``correction_days``; IK and Standort change only here and in registration."""
        closed = self.registration.end
        return Window(
            "correction",
            "Korrekturphase",
            closed + timedelta(days=1),
            closed + timedelta(days=self.correction_days),
        )

    @property
    def confirmation(self) -> date:
        """The day after the correction phase: the registrations are confirmed by mail."""
        return self.correction.end + timedelta(days=1)

    @property
    def late_registration(self) -> Window:
        """Late registration: the replacement window."""
        return Window(
            "late_registration",
            "Nachregistrierung",
            self.replacement.start,
            self.replacement.end,
        )

    @property
    def hospital_reminder(self) -> date:
        """The day registered hospitals without an accepted report are reminded."""
        return self.hospital.end - REMINDER_BEFORE

    @property
    def c1_reminder(self) -> date:
        """The day the QS-Stellen are told which hospitals lack C-1 data."""
        return self.c1.end - REMINDER_BEFORE

    @property
    def final_bundle(self) -> date:
        """The day after the replacement window: all accepted reports once more."""
        return self.replacement.end + timedelta(days=1)

    def delivery_windows(self) -> list[Window]:
        """The windows hospitals deliver their parts in, earliest first."""
        return [self.hospital, self.replacement]

    def rows(self) -> list[dict[str, str]]:
        """The calendar as rows: what happens, from, to (ISO dates), earliest first."""
        spans: list[tuple[str, date, date]] = [
            (self.registration.label, self.registration.start, self.registration.end),
            (self.correction.label, self.correction.start, self.correction.end),
            ("Bestätigung der Registrierungen", self.confirmation, self.confirmation),
            (self.hospital.label, self.hospital.start, self.hospital.end),
            ("Erinnerung Krankenhäuser", self.hospital_reminder, self.hospital_reminder),
            (self.c1.label, self.c1.start, self.c1.end),
            (self.replacement.label, self.replacement.start, self.replacement.end),
            (
                self.late_registration.label,
                self.late_registration.start,
                self.late_registration.end,
            ),
            ("Erinnerung QS-Stellen (C-1)", self.c1_reminder, self.c1_reminder),
            ("Abschlusspaket", self.final_bundle, self.final_bundle),
        ]
        spans.sort(key=lambda span: (span[1], span[2]))
        return [
            {"was": what, "von": start.isoformat(), "bis": end.isoformat()}
            for what, start, end in spans
        ]


def _window(name: str, label: str, span: DateRange | None, default: DateRange) -> Window:
    chosen = span if span is not None else default
    return Window(name, label, chosen.start, chosen.end)


def calendar_for(settings: QbSettings, year: int) -> YearCalendar:
    """The calendar of report ``year`` from ``[qb.years.<year>]`` or the Qb-R's dates."""
    configured = settings.years.get(str(year))
    after = year + 1

    def span(start: tuple[int, int], end: tuple[int, int]) -> DateRange:
        return DateRange(start=date(after, *start), end=date(after, *end))

    return YearCalendar(
        year=year,
        hospital=_window(
            "hospital",
            "Hauptlieferung",
            configured.hospital if configured else None,
            span((10, 15), (11, 15)),
        ),
        c1=_window(
            "c1", "Teil C-1", configured.c1 if configured else None, span((11, 15), (12, 15))
        ),
        replacement=_window(
            "replacement",
            "Ersatzlieferung",
            configured.replacement if configured else None,
            span((11, 23), (12, 15)),
        ),
        configured=configured is not None,
        correction_days=configured.correction_days if configured else CORRECTION_DAYS,
    )


def local_day(settings: QbSettings, at: datetime) -> date:
    """The calendar day of a moment in ``qb.timezone``."""
    if at.tzinfo is None:
        raise ValueError("the calendar needs a timezone-aware time")
    return at.astimezone(ZoneInfo(settings.timezone)).date()


def end_of_day(settings: QbSettings, day: date) -> datetime:
    """The moment a calendar day in ``qb.timezone`` ends (the next day's midnight)."""
    return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(settings.timezone))


def final_bundle_year(settings: QbSettings, at: datetime) -> int | None:
    """The latest report year whose final-bundle day has come at ``at``, if any."""
    day = local_day(settings, at)
    candidates = {day.year - 1, day.year - 2, *(int(y) for y in settings.years)}
    due = [y for y in candidates if calendar_for(settings, y).final_bundle <= day]
    return max(due) if due else None
