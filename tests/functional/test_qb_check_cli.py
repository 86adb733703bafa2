"""``qprserver check`` end to end: the real CLI in a process of its own, no database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import QB_DATA

SCHEMA = QB_DATA / "qb-2019-schema.xsd"
REPORT = QB_DATA / "260100023-01-2019-xml.xml"
KH_IK = "<IK>260100023</IK>\n      <Standortnummer>99</Standortnummer>"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    missing = [p.name for p in (SCHEMA, REPORT) if not p.is_file()]
    if missing:
        pytest.skip(
            f"real Qb test data missing in {QB_DATA} ({', '.join(missing)}); "
            "set QPR_QB_DATA to the folder holding them"
        )
    return tmp_path


def _config(folder: Path, schema: Path = SCHEMA) -> Path:
    config = folder / "qprserver.toml"
    config.write_text(f'[qb.schemas]\n2019 = "{schema}"\n', encoding="utf-8")
    return config


def _qprserver(*args: str, config: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "QPRSERVER_CONFIG"}
    head = ["--config", str(config)] if config else []
    return subprocess.run(
        [sys.executable, "-m", "qprserver", *head, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _wrong_check_digit(folder: Path) -> Path:
    path = folder / REPORT.name
    text = REPORT.read_text(encoding="utf-8")
    assert text.count(KH_IK) == 1
    path.write_text(text.replace(KH_IK, KH_IK.replace("260100023", "260100024")), "utf-8")
    return path


def test_real_report_is_accepted_with_exit_0_and_no_database(folder: Path) -> None:
    config = _config(folder)
    result = _qprserver("check", str(REPORT), config=config)
    assert result.returncode == 0, result.stderr
    assert "Ergebnis:     ANGENOMMEN (0 hart, 0 weich, 1 Pilot)" in result.stdout
    assert "[QB19-11] Pilot" in result.stdout
    assert result.stderr == ""
    # The default SQLite database beside the config was never touched.
    assert not (folder / "var").exists()


def test_wrong_check_digit_is_rejected_with_exit_1_and_the_protocol(folder: Path) -> None:
    result = _qprserver("check", str(_wrong_check_digit(folder)), config=_config(folder))
    assert result.returncode == 1
    assert "Ergebnis:     ABGELEHNT (2 hart, 0 weich, 1 Pilot)" in result.stdout
    assert "[QB19-01] hart – Prüfziffer des Institutionskennzeichens" in result.stdout
    assert "Ort:       /Qualitaetsbericht/Krankenhaus/Krankenhauskontaktdaten/IK (Zeile 60)" in (
        result.stdout
    )


def test_json_output_parses_and_carries_the_outcome(folder: Path) -> None:
    config = _config(folder)
    accepted = _qprserver("check", str(REPORT), "--json", config=config)
    assert accepted.returncode == 0
    assert json.loads(accepted.stdout)["ergebnis"] == "angenommen"
    rejected = _qprserver("check", str(_wrong_check_digit(folder)), "--json", config=config)
    assert rejected.returncode == 1
    data = json.loads(rejected.stdout)
    assert data["ergebnis"] == "abgelehnt"
    assert {f["regel"] for f in data["befunde"] if f["klasse"] == "hart"} == {
        "QB19-01",
        "QB19-02",
    }


def test_schema_option_works_without_any_config_and_year_option_without_a_name(
    folder: Path,
) -> None:
    renamed = folder / "bericht.xml"
    renamed.write_bytes(REPORT.read_bytes())
    result = _qprserver(
        "check", str(renamed), "--year", "2019", "--schema", str(SCHEMA), "--json", config=None
    )
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert {f["regel"] for f in data["befunde"]} == {"DATEI-01", "QB19-11"}
    assert data["regelwerk"]["regeln"] >= 10


def test_check_that_cannot_run_exits_2_with_one_line(folder: Path) -> None:
    missing = _qprserver("check", str(REPORT), config=_config(folder, folder / "gone.xsd"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"Error: qb.schemas.2019: {folder / 'gone.xsd'}: No such file or directory"
    ]
    assert missing.stdout == ""
    no_config = _qprserver("check", str(REPORT), config=None)
    assert no_config.returncode == 2
    assert no_config.stderr.strip().splitlines() == [
        "Error: no config file: pass --config PATH or set QPRSERVER_CONFIG"
    ]
