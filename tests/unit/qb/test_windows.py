from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qprserver.config import QbSettings, parse_config
from qprserver.errors import ConfigError
from qprserver.qb import open_windows, windows_message, windows_open

SETTINGS = QbSettings.model_validate(
    {
        "windows": {
            "2019": {
                "main": {"start": "2020-10-15", "end": "2020-11-15"},
                "c1": {"start": "2020-11-15", "end": "2020-12-15"},
                "replacement": {"start": "2020-11-23", "end": "2020-12-15"},
            }
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
        ("2020-11-20T12:00:00+00:00", True),  # only C-1 open
        ("2020-12-15T22:59:59+00:00", True),  # last second of 15 Dec in Berlin
        ("2020-12-15T23:00:00+00:00", False),  # 16 Dec in Berlin
        ("2021-06-01T12:00:00+00:00", False),
    ],
)
def test_windows_are_whole_days_in_the_configured_zone(at: str, is_open: bool) -> None:
    assert windows_open(SETTINGS, 2019, _at(at)) is is_open


def test_overlapping_windows_are_all_reported_open() -> None:
    names = [w.name for w in open_windows(SETTINGS, 2019, _at("2020-11-30T12:00:00+00:00"))]
    assert names == ["c1", "replacement"]


def test_year_without_windows_is_always_closed_and_says_so() -> None:
    assert not windows_open(SETTINGS, 2018, _at("2019-11-01T12:00:00+00:00"))
    assert windows_message(SETTINGS, 2018) == (
        "Für das Berichtsjahr 2018 ist keine Lieferfrist eingerichtet; "
        "Berichte dieses Jahres werden nicht angenommen."
    )


def test_closed_message_names_every_window_of_the_year() -> None:
    assert windows_message(SETTINGS, 2019) == (
        "Lieferfristen für das Berichtsjahr 2019: Hauptlieferung 15.10.2020–15.11.2020, "
        "Teil C-1 15.11.2020–15.12.2020, Ersatzlieferung 23.11.2020–15.12.2020. "
        "Außerhalb dieser Fristen werden keine Berichte angenommen."
    )


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        windows_open(SETTINGS, 2019, datetime(2020, 11, 1, 12, 0))


def test_windows_take_toml_dates_and_resolve_paths_against_the_config(tmp_path: Path) -> None:
    data = tomllib.loads(
        '[qb.schemas]\n2019 = "schemas/qb-2019.xsd"\n'
        "[qb.windows.2019]\nmain = { start = 2020-10-15, end = 2020-11-15 }\n"
    )
    settings = parse_config(data, tmp_path / "qpr.toml").qb
    assert settings.schemas["2019"] == tmp_path / "schemas" / "qb-2019.xsd"
    assert windows_open(settings, 2019, datetime(2020, 11, 15, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"qb": {"windows": {"2019": {"main": {"start": "2020-11-15", "end": "2020-10-15"}}}}},
            r"qb\.windows\.2019\.main: Value error, end lies before start",
        ),
        ({"qb": {"schemas": {"19": "x.xsd"}}}, r"qb\.schemas: Value error, '19' is no report year"),
        ({"qb": {"windows": {"2019": {"haupt": {}}}}}, r"qb\.windows\.2019\.haupt: unknown key"),
    ],
)
def test_bad_qb_settings_stop_with_the_key(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, tmp_path / "qpr.toml")
