"""``qb calendar``: the dates of a report year from the config, and old configs refused."""

from __future__ import annotations

from tests.functional.conftest import Instance


def _configure(instance: Instance, extra: str) -> None:
    instance.config.write_text(instance.config.read_text(encoding="utf-8") + extra, "utf-8")


def test_the_calendar_of_a_configured_year_is_computed_from_its_deadlines(
    instance: Instance,
) -> None:
    _configure(instance, "[qb.years.2019]\nhospital = { start = 2020-09-01, end = 2020-09-30 }\n")
    shown = instance.json("qb", "calendar", "2019")
    assert shown["berichtsjahr"] == 2019 and shown["konfiguriert"] is True
    by_name = {row["was"]: (row["von"], row["bis"]) for row in shown["termine"]}
    assert by_name["Registrierung"] == ("2020-05-27", "2020-07-08")
    assert by_name["Hauptlieferung"] == ("2020-09-01", "2020-09-30")
    assert by_name["Erinnerung Krankenhäuser"] == ("2020-09-16", "2020-09-16")
    assert by_name["Abschlusspaket"] == ("2020-12-16", "2020-12-16")
    table = instance.ok("qb", "calendar", "2020")
    assert "2021-10-15" in table and "dates from Qb-R (not configured)" in table


def test_an_old_window_setting_stops_every_command_naming_the_new_keys(
    instance: Instance,
) -> None:
    _configure(instance, "[qb.windows.2019]\nmain = { start = 2020-10-15, end = 2020-11-15 }\n")
    line = instance.fails("qb", "calendar", "2019")
    assert "qb.windows: replaced by [qb.years.<Y>] with hospital, c1 and replacement" in line
