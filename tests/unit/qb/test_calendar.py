from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from qprserver.config import QbSettings, parse_config
from qprserver.errors import ConfigError
from qprserver.qb import open_windows, windows_message, windows_open
from qprserver.qb.calendar import calendar_for, final_bundle_year

SETTINGS = QbSettings.model_validate(
    {
        "years": {
            "2019": {
                "hospital": {"start": "2020-10-15", "end": "2020-11-15"},
                "c1": {"start": "2020-11-15", "end": "2020-12-15"},
                "replacement": {"start": "2020-11-23", "end": "2020-12-15"},
            },
            # A year the G-BA moved: its whole calendar moves with it.
            "2021": {"hospital": {"start": "2022-10-01", "end": "2022-10-31"}},
        }
    }
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        ("2020-10-14T21:59:59+00:00", False),  # 14 Oct, 23:59:59 in Berlin
        ("2020-10-14T22:00:00+00:00", True),  # 15 Oct, 00:00 in Berlin
        ("2020-11-20T12:00:00+00:00", False),  # only C-1 open: not for hospitals
        ("2020-11-23T12:00:00+00:00", True),  # replacements
        ("2020-12-15T22:59:59+00:00", True),  # last second of 15 Dec in Berlin
        ("2020-12-15T23:00:00+00:00", False),  # 16 Dec in Berlin
        ("2021-06-01T12:00:00+00:00", False),
    ],
)
def test_hospitals_deliver_in_whole_days_of_the_hospital_and_replacement_windows(
    at: str, is_open: bool
) -> None:
    assert windows_open(SETTINGS, 2019, _at(at)) is is_open


def test_open_windows_names_the_window_a_delivery_falls_in() -> None:
    names = [w.name for w in open_windows(SETTINGS, 2019, _at("2020-11-30T12:00:00+00:00"))]
    assert names == ["replacement"]


def test_a_year_not_configured_gets_the_regulations_dates() -> None:
    calendar = calendar_for(SETTINGS, 2024)
    assert not calendar.configured
    assert (calendar.hospital.start, calendar.hospital.end) == (
        date(2025, 10, 15),
        date(2025, 11, 15),
    )
    assert (calendar.c1.start, calendar.c1.end) == (date(2025, 11, 15), date(2025, 12, 15))
    assert (calendar.replacement.start, calendar.replacement.end) == (
        date(2025, 11, 23),
        date(2025, 12, 15),
    )
    assert windows_open(SETTINGS, 2024, _at("2025-11-01T12:00:00+00:00"))


def test_every_date_of_the_year_is_computed_from_its_deadlines() -> None:
    calendar = calendar_for(SETTINGS, 2019)
    # 15 Nov 2020 minus 18 and 12 weeks.
    assert (calendar.registration.start, calendar.registration.end) == (
        date(2020, 7, 12),
        date(2020, 8, 23),
    )
    assert (calendar.late_registration.start, calendar.late_registration.end) == (
        date(2020, 11, 23),
        date(2020, 12, 15),
    )
    assert calendar.hospital_reminder == date(2020, 11, 1)
    assert calendar.c1_reminder == date(2020, 12, 1)
    assert calendar.final_bundle == date(2020, 12, 16)


def test_a_moved_hospital_deadline_moves_registration_and_reminder() -> None:
    calendar = calendar_for(SETTINGS, 2021)
    assert calendar.configured
    assert calendar.registration.start == date(2022, 6, 27)
    assert calendar.registration.end == date(2022, 8, 8)
    assert calendar.hospital_reminder == date(2022, 10, 17)
    # The windows left out keep the regulation's dates.
    assert calendar.replacement.end == date(2022, 12, 15)


def test_the_calendar_rows_run_in_date_order() -> None:
    rows = calendar_for(SETTINGS, 2019).rows()
    assert [row["von"] for row in rows] == sorted(row["von"] for row in rows)
    assert rows[0] == {"was": "Registrierung", "von": "2020-07-12", "bis": "2020-08-23"}
    assert rows[-1] == {"was": "Abschlusspaket", "von": "2020-12-16", "bis": "2020-12-16"}


@pytest.mark.parametrize(
    ("at", "year"),
    [
        ("2020-12-15T22:59:59+00:00", 2018),  # 15 Dec 2020 in Berlin: 2019 not yet
        ("2020-12-15T23:00:00+00:00", 2019),  # 16 Dec 2020 in Berlin
        ("2021-07-01T12:00:00+00:00", 2019),
        ("2021-12-16T12:00:00+00:00", 2020),
    ],
)
def test_the_final_bundle_belongs_to_the_latest_year_past_its_replacement_window(
    at: str, year: int
) -> None:
    assert final_bundle_year(SETTINGS, _at(at)) == year


def test_closed_message_names_the_delivery_windows_of_the_year() -> None:
    assert windows_message(SETTINGS, 2019) == (
        "Lieferfristen für das Berichtsjahr 2019: Hauptlieferung 15.10.2020–15.11.2020, "
        "Ersatzlieferung 23.11.2020–15.12.2020. "
        "Außerhalb dieser Fristen werden keine Berichte angenommen."
    )


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        windows_open(SETTINGS, 2019, datetime(2020, 11, 1, 12, 0))


def test_years_take_toml_dates_and_resolve_paths_against_the_config(tmp_path: Path) -> None:
    data = tomllib.loads(
        '[qb.schemas]\n2019 = "schemas/qb-2019.xsd"\n'
        "[qb.years.2019]\nhospital = { start = 2020-09-15, end = 2020-09-30 }\n"
    )
    settings = parse_config(data, tmp_path / "qpr.toml").qb
    assert settings.schemas["2019"] == tmp_path / "schemas" / "qb-2019.xsd"
    assert windows_open(settings, 2019, datetime(2020, 9, 30, 12, tzinfo=UTC))
    assert not windows_open(settings, 2019, datetime(2020, 10, 15, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"qb": {"years": {"2019": {"hospital": {"start": "2020-11-15", "end": "2020-10-15"}}}}},
            r"qb\.years\.2019\.hospital: Value error, end lies before start",
        ),
        ({"qb": {"schemas": {"19": "x.xsd"}}}, r"qb\.schemas: Value error, '19' is no report year"),
        ({"qb": {"years": {"2019": {"main": {}}}}}, r"qb\.years\.2019\.main: unknown key"),
    ],
)
def test_bad_qb_settings_stop_with_the_key(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, tmp_path / "qpr.toml")


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (
            {"qb": {"windows": {"2019": {"main": {"start": "2020-10-15", "end": "2020-11-15"}}}}},
            r"qb\.windows: replaced by \[qb\.years\.<Y>\] with hospital, c1 and replacement",
        ),
        (
            {"jobs": {"final_bundle_after": "2026-12-15"}},
            r"jobs\.final_bundle_after: replaced by .*\(qb\.years\.<Y>\.replacement\.end\)",
        ),
    ],
)
def test_an_old_config_stops_naming_the_keys_that_replace_it(
    tmp_path: Path, data: dict[str, object], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        parse_config(data, tmp_path / "qpr.toml")


def test_the_correction_phase_follows_registration_for_four_weeks_then_the_confirmation() -> None:
    calendar = calendar_for(SETTINGS, 2019)
    assert (calendar.correction.start, calendar.correction.end) == (
        date(2020, 8, 24),
        date(2020, 9, 20),
    )
    assert calendar.confirmation == date(2020, 9, 21)
    rows = {row["was"]: (row["von"], row["bis"]) for row in calendar.rows()}
    assert rows["Korrekturphase"] == ("2020-08-24", "2020-09-20")
    assert rows["Bestätigung der Registrierungen"] == ("2020-09-21", "2020-09-21")


def test_a_shorter_correction_phase_is_configured_and_more_than_four_weeks_refused(
    tmp_path: Path,
) -> None:
    data = tomllib.loads(
        '[qb.years.2019]\ncorrection_days = 14\nc1_schema = "schemas/c1-2019.xsd"\n'
    )
    settings = parse_config(data, tmp_path / "qpr.toml").qb
    assert calendar_for(settings, 2019).correction.end == date(2020, 9, 6)
    assert settings.years["2019"].c1_schema == tmp_path / "schemas" / "c1-2019.xsd"
    with pytest.raises(ConfigError, match=r"qb\.years\.2019\.correction_days"):
        parse_config(tomllib.loads("[qb.years.2019]\ncorrection_days = 29\n"), tmp_path / "q.toml")
