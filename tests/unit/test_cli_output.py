"""``cli/output.py``: the rows as built go out as JSON, or as a table of chosen columns."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from qprserver.cli.output import Column, emit, json_option

ROWS = [
    {"ik": "105830016", "roles": ["recipient", "admin"], "land": None, "at": "2026-11-28T06:14:05"},
    {"ik": "190500027", "roles": ["depositor"], "land": "NW", "at": "2026-11-28T06:14:06"},
]
COLUMNS = (
    Column("IK", "ik"),
    Column("Rollen", value=lambda r: ",".join(r["roles"])),
    Column("Land", "land"),
    Column("Angelegt", "at"),
)


def test_json_is_the_rows_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, as_json=True, columns=COLUMNS)
    assert json.loads(capsys.readouterr().out) == ROWS


def test_a_table_shows_the_columns_with_none_as_an_empty_cell(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit(ROWS, as_json=False, columns=COLUMNS)
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[1].strip("┃").split("┃")] == [
        "IK",
        "Rollen",
        "Land",
        "Angelegt",
    ]
    first = [c.strip() for c in lines[3].strip("│").split("│")]
    assert first == ["105830016", "recipient,admin", "", "2026-11-28T06:14:05"]


def test_a_piped_table_wider_than_80_columns_keeps_whole_cells(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long = [{"name": "x" * 70, "at": "2026-11-28T06:14:05.501504+00:00"}]
    emit(long, as_json=False, columns=(Column("Name", "name"), Column("At", "at")))
    out = capsys.readouterr().out
    assert "x" * 70 in out and "2026-11-28T06:14:05.501504+00:00" in out


def test_a_show_command_prints_its_text_form_without_json() -> None:
    @click.command()
    @json_option
    def show(as_json: bool) -> None:
        emit({"ik": "105830016"}, as_json=as_json, text=lambda d: click.echo(f"ik {d['ik']}"))

    runner = CliRunner()
    assert runner.invoke(show, []).output == "ik 105830016\n"
    assert json.loads(runner.invoke(show, ["--json"]).output) == {"ik": "105830016"}
