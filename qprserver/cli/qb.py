"""``qb``: the Qb-R reporting year, as the operator follows it: its calendar, the
registrations and the mismatches the QS-Stellen report on them, the positive list, the
final delivery list, who is missing, and the year at a glance.
Lists print as a table, ``--format csv`` (``;``-separated, for the G-BA) or JSON.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database
from qprserver.qb.calendar import calendar_for

YEAR = click.IntRange(1990, 2099)
FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Table for people, CSV (;) or JSON for programs.",
)


@click.group("qb")
def qb_group() -> None:
    """The Qb-R reporting year: calendar, registrations, positive list, lists, status."""


def _print(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(columns), delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
        return
    emit(
        list(rows),
        as_json=fmt == "json",
        columns=[Column(c.upper() if c == "ik" else c.title(), c) for c in columns],
    )


def _read(app: App, work: Callable[[Any], Awaitable[Any]]) -> Any:
    async def run(db: Database) -> Any:
        async with db.read_session() as session:
            return await work(session)

    return app.run(run)


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


@qb_group.group("positive-list")
def positive_list_group() -> None:
    """The G-BA's positive list of a report year."""


@positive_list_group.command("import")
@click.argument("year", type=YEAR)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_app
def positive_list_import(app: App, year: int, file: Path) -> None:
    """Make FILE (CSV: IK;Standort;Name;Adresse) the positive list of report YEAR; a file
    with any bad row changes nothing and names every bad row by its line."""
    from qprserver.qb import positive_list

    entries = positive_list.parse(file.read_bytes())

    async def work(db: Database) -> int:
        async with db.session() as session:
            return await positive_list.replace(session, app.actor(), app.clock.now(), year, entries)

    click.echo(f"positive list {year}: {app.run(work)} reports imported")


@qb_group.group("registrations")
def registrations_group() -> None:
    """The report registrations of a year."""


@registrations_group.command("export")
@click.argument("year", type=YEAR)
@FORMAT
@pass_app
def registrations_export(app: App, year: int, fmt: str) -> None:
    """Every registration of report YEAR, for the QS-Stellen to compare with theirs."""
    from qprserver.qb import lists

    rows = _read(app, lambda session: lists.registrations(session, year))
    columns = (
        "ik",
        "standort",
        "name",
        "kontakt",
        "email",
        "telefon",
        "zulassung",
        "weitere_iks",
        "status",
        "nachregistriert",
        "registriert",
    )
    _print(rows, fmt, columns if fmt != "table" else ("ik", "standort", "name", "status"))


@registrations_group.command("mismatches")
@click.argument("year", type=YEAR)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_app
def registrations_mismatches(app: App, year: int, file: Path, as_json: bool) -> None:
    """Import the mismatches the QS-Stellen report for report YEAR (CSV: IK;Standort;Grund)
    in its correction phase: each registration named gets a mail with the mismatch and a
    link to correct IK/Standort until the phase ends. A file with any bad row (or a row
    naming no registration of YEAR) changes nothing and names every bad row by its line."""
    from qprserver.qb import correction

    rows = correction.parse(file.read_bytes())

    async def work(db: Database) -> list[dict[str, object]]:
        async with db.session() as session:
            return await correction.import_mismatches(
                session,
                app.actor(),
                app.clock.now(),
                year,
                rows,
                qb=app.settings.qb,
                notifier=app.notifier(),
            )

    concerned = app.run(work)
    phase = calendar_for(app.settings.qb, year).correction
    emit(
        {
            "berichtsjahr": year,
            "korrektur_bis": phase.end.isoformat(),
            "registrierungen": concerned,
        },
        as_json=as_json,
        text=lambda _: click.echo(
            f"mismatches {year}: {len(concerned)} registrations told, "
            f"correction until {phase.end.isoformat()}"
        ),
    )


@qb_group.command("delivery-list")
@click.argument("year", type=YEAR)
@FORMAT
@pass_app
def delivery_list(app: App, year: int, fmt: str) -> None:
    """The final delivery list of report YEAR: hospitals and sites with an accepted
    report, in its latest version."""
    from qprserver.qb import lists

    rows = _read(app, lambda session: lists.delivery_list(session, year))
    _print(rows, fmt, ("ik", "standort", "name", "datei", "version", "angenommen"))


@qb_group.command("missing")
@click.argument("year", type=YEAR)
@FORMAT
@pass_app
def missing(app: App, year: int, fmt: str) -> None:
    """Reports of YEAR on the positive list without an accepted report, and confirmed
    registrations not on the list."""
    from qprserver.qb import lists

    rows = _read(app, lambda session: lists.missing(session, year))
    _print(rows, fmt, ("ik", "standort", "name", "grund"))


@qb_group.command("status")
@click.argument("year", type=YEAR)
@FORMAT
@json_option
@pass_app
def status(app: App, year: int, fmt: str, as_json: bool) -> None:
    """Report YEAR at a glance: registrations, the correction phase and confirmation
    mails, deliveries, reminders, C-1 parts and Null-Meldungen, the lists (``--json``
    is ``--format json``)."""
    from qprserver.qb import lists

    counts = _read(app, lambda session: lists.status(session, year))
    if as_json or fmt == "json":
        emit({"berichtsjahr": year, **counts}, as_json=True)
        return
    rows = [{"was": name, "anzahl": count} for name, count in counts.items()]
    _print(rows, fmt, ("was", "anzahl"))
