"""``qb``: the calendar of a report year from the config (old configs refused), the
positive-list and mismatch imports (all or nothing, bad rows by line) and the year's
lists as table, CSV and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from tests.functional.conftest import Instance
from tests.functional.harness import confirmed_registration

HOSPITAL = "260100023"


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


def test_a_positive_list_with_bad_rows_imports_nothing_and_names_each_line(
    instance: Instance, tmp_path: Path
) -> None:
    bad = tmp_path / "positivliste.csv"
    bad.write_text(
        "IK;Standort;Name;Adresse\n"
        f"{HOSPITAL};01;Klinik Nord;Kiel\n"
        "260100024;01;Falsche Prüfziffer;Kiel\n"
        f"{HOSPITAL};1;Standort einstellig;Kiel\n"
        f"{HOSPITAL};01;Doppelt;Kiel\n",
        encoding="utf-8",
    )
    line = instance.fails("qb", "positive-list", "import", "2019", str(bad))
    assert line.startswith("Error: positive list: 3 bad rows, nothing imported: line 3: IK ")
    assert "line 4: Standort '1' is neither two nor six digits" in line
    assert "line 5: IK 260100023 Standort 01 repeats line 2" in line
    assert json.loads(instance.ok("qb", "status", "2019", "--format", "json"))["positivliste"] == 0


def test_the_lists_of_a_year_print_as_table_csv_and_json(
    instance: Instance, tmp_path: Path
) -> None:
    good = tmp_path / "positivliste.csv"
    good.write_text(
        "\ufeffik;STANDORT;adresse;name\n"
        f"{HOSPITAL};01;Kiel;Klinik Nord\n{HOSPITAL};99;Kiel;Klinik Gesamt\n",
        encoding="utf-8",
    )
    out = instance.ok("qb", "positive-list", "import", "2019", str(good))
    assert out.strip() == "positive list 2019: 2 reports imported"
    assert instance.ok("qb", "missing", "2019", "--format", "csv").splitlines() == [
        "ik;standort;name;grund",
        f"{HOSPITAL};01;Klinik Nord;kein angenommener Bericht",
        f"{HOSPITAL};99;Klinik Gesamt;kein angenommener Bericht",
    ]
    assert json.loads(instance.ok("qb", "delivery-list", "2019", "--format", "json")) == []
    status = json.loads(instance.ok("qb", "status", "2019", "--format", "json"))
    assert status["berichtsjahr"] == 2019 and status["fehlend"] == 2
    table = instance.ok("qb", "status", "2019")
    assert "positivliste" in table and "fehlend" in table


def test_the_registrations_of_a_year_export_for_the_qs_stellen(instance: Instance) -> None:
    assert instance.ok("qb", "registrations", "export", "2019", "--format", "csv").splitlines() == [
        "ik;standort;name;kontakt;email;telefon;zulassung;weitere_iks;status;nachregistriert;"
        "registriert"
    ]
    assert (
        json.loads(instance.ok("qb", "registrations", "export", "2019", "--format", "json")) == []
    )


def _in_correction_phase(instance: Instance) -> int:
    """Configure report year 2030 so that today (Berlin) lies inside its correction phase
    (the registration window closed ten days ago); the year."""
    today = datetime.now(ZoneInfo("Europe/Berlin")).date()
    deadline = today - timedelta(days=10) + timedelta(weeks=12)
    start = deadline - timedelta(days=30)
    _configure(instance, f"[qb.years.2030]\nhospital = {{ start = {start}, end = {deadline} }}\n")
    return 2030


def test_mismatches_import_in_the_correction_phase_all_or_nothing_and_mail_each_registration(
    instance: Instance, tmp_path: Path
) -> None:
    year = _in_correction_phase(instance)

    async def add(session: AsyncSession) -> None:
        session.add_all(
            [confirmed_registration(site, year=2030, at=datetime.now(UTC)) for site in ("01", "02")]
        )

    instance.in_session(add)
    rows = instance.json("qb", "calendar", str(year))["termine"]
    phase = next(row for row in rows if row["was"] == "Korrekturphase")
    bad = tmp_path / "abweichungen.csv"
    bad.write_text(
        "IK;Standort;Grund\n"
        f"{HOSPITAL};01;Standort unbekannt\n"
        f"{HOSPITAL};03;nicht registriert\n"
        f"{HOSPITAL};02;\n",
        encoding="utf-8",
    )
    line = instance.fails("qb", "registrations", "mismatches", str(year), str(bad))
    assert line == (
        "Error: mismatches: 1 bad rows, nothing imported: line 4: Grund (reason) is empty"
    )
    bad.write_text(bad.read_text(encoding="utf-8").replace(";02;\n", ";02;IK abweichend\n"))
    line = instance.fails("qb", "registrations", "mismatches", str(year), str(bad))
    assert line == (
        f"Error: mismatches: 1 bad rows, nothing imported: line 3: IK {HOSPITAL} Standort 03 "
        f"is not registered for {year}"
    )
    assert json.loads(instance.ok("qb", "status", str(year), "--json"))["abweichung_gemeldet"] == 0

    good = tmp_path / "abweichungen-gut.csv"
    good.write_text(f"ik;standortnummer;reason\n{HOSPITAL};02;IK abweichend\n", encoding="utf-8")
    told = instance.json("qb", "registrations", "mismatches", str(year), str(good))
    assert told == {
        "berichtsjahr": year,
        "korrektur_bis": phase["bis"],
        "registrierungen": [
            {
                "ik": HOSPITAL,
                "standort": "02",
                "name": "Klinik 02",
                "email": "qb-02@klinik.example",
                "grund": "IK abweichend",
            }
        ],
    }
    mails = instance.json("mail", "list")
    assert [m["to"] for m in mails if "Abweichung" in m["subject"]] == ["qb-02@klinik.example"]
    assert json.loads(instance.ok("qb", "status", str(year), "--json"))["abweichung_gemeldet"] == 1
