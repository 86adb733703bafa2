"""The period functions of the job registry, and which jobs offer a dry run."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from qprserver.config import parse_config
from qprserver.jobs.registry import daily, every, job_specs, once, weekly, yearly

BERLIN = ZoneInfo("Europe/Berlin")


def test_an_interval_period_is_a_slice_of_unix_time() -> None:
    period = every(3600)
    assert period(datetime(2026, 11, 29, 10, 0, tzinfo=UTC)) == period(
        datetime(2026, 11, 29, 10, 59, 59, tzinfo=UTC)
    )
    assert period(datetime(2026, 11, 29, 11, 0, tzinfo=UTC)) == str(
        int(datetime(2026, 11, 29, 11, 0, tzinfo=UTC).timestamp()) // 3600
    )


def test_an_interval_of_zero_seconds_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        every(0)


def test_a_daily_period_is_the_local_calendar_day() -> None:
    period = daily(BERLIN)
    # 23:30 UTC on the 29th is already the 30th in Berlin (winter, UTC+1).
    assert period(datetime(2026, 11, 29, 23, 30, tzinfo=UTC)) == "2026-11-30"
    assert period(datetime(2026, 11, 29, 22, 59, tzinfo=UTC)) == "2026-11-29"


def test_a_weekly_period_is_the_iso_week_before() -> None:
    period = weekly(BERLIN)
    # Monday 02:00 in Berlin of ISO week 46 works on week 45.
    assert period(datetime(2026, 11, 9, 1, 0, tzinfo=UTC)) == "2026-W45"
    # Sunday 23:30 UTC is Monday 00:30 in Berlin: already week 46's run, for week 45.
    assert period(datetime(2026, 11, 8, 23, 30, tzinfo=UTC)) == "2026-W45"
    assert period(datetime(2026, 11, 8, 22, 30, tzinfo=UTC)) == "2026-W44"


def test_a_yearly_period_is_the_local_calendar_year() -> None:
    period = yearly(BERLIN)
    # New Year's Eve 23:30 UTC is already the new year in Berlin.
    assert period(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == "2027"
    assert period(datetime(2026, 12, 31, 22, 30, tzinfo=UTC)) == "2026"


def test_a_once_period_is_the_same_key_at_every_moment() -> None:
    period = once("2026-12-15")
    assert period(datetime(2026, 1, 1, tzinfo=UTC)) == period(datetime(2030, 6, 1, tzinfo=UTC))
    assert period(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-12-15"


def test_each_job_of_the_registry_uses_the_period_of_its_schedule(tmp_path: Path) -> None:
    settings = parse_config({}, tmp_path / "q.toml")
    specs = job_specs(settings)
    monday = datetime(2026, 11, 9, 1, 0, tzinfo=UTC)  # 02:00 in Berlin
    assert specs["bundles"].period(monday) == "2026-W45"
    assert specs["retention"].period(monday) == "2026-11-09"
    # The latest report year past its replacement window (2024's ended 15 Dec 2025).
    assert specs["final-bundle"].period(monday) == "2024"
    step = settings.jobs.send_interval
    assert specs["mail-send"].period(monday) == str(int(monday.timestamp()) // step)


def test_only_jobs_that_offer_a_dry_run_have_one(tmp_path: Path) -> None:
    specs = job_specs(parse_config({}, tmp_path / "q.toml"))
    assert {name for name, spec in specs.items() if spec.dry_run is not None} == {"retention"}
