"""``qb``: the Qb-R reporting year, as the operator follows it."""

from __future__ import annotations

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.qb.calendar import calendar_for


@click.group("qb")
def qb_group() -> None:
    """The Qb-R reporting year: calendar."""


@qb_group.command("calendar")
@click.argument("year", type=click.IntRange(1990, 2099))
@json_option
@pass_app
def qb_calendar(app: App, year: int, as_json: bool) -> None:
    """The calendar of report YEAR, computed from [qb.years.YEAR] or the Qb-R's dates."""
    calendar = calendar_for(app.settings.qb, year)
    rows = calendar.rows()
    if as_json:
        emit(
            {"berichtsjahr": year, "konfiguriert": calendar.configured, "termine": rows},
            as_json=True,
        )
        return
    emit(
        rows,
        as_json=False,
        columns=[Column("Was", "was"), Column("Von", "von"), Column("Bis", "bis")],
    )
    source = f"[qb.years.{year}]" if calendar.configured else "Qb-R (not configured)"
    click.echo(f"report year {year}: dates from {source}")
