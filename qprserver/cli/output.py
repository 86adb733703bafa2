"""What a command prints: a Rich table (or a few lines) for people, JSON with ``--json``.

Every list and show command builds its rows once, as the dictionaries ``--json``
prints, and hands them to ``emit`` with the table's columns (or a function writing
the text form). Scripts rely on the JSON shapes, so they are the rows as built,
unchanged; the columns only pick and format what a person reads. Rich is imported
only when a table is printed: the CLI's start-up stays free of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
Row = Mapping[str, Any]


def json_option(func: F) -> F:
    """The ``--json`` flag every list and show command takes, as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


@dataclass(frozen=True)
class Column:
    """A table column: its header and the row's value under ``key`` or from ``value``."""

    header: str
    key: str = ""
    value: Callable[[Row], object] | None = None

    def cell(self, row: Row) -> str:
        got = self.value(row) if self.value is not None else row[self.key]
        return "" if got is None else str(got)


def emit(
    data: Any,
    *,
    as_json: bool,
    columns: Sequence[Column] = (),
    text: Callable[[Any], None] | None = None,
) -> None:
    """Print data as JSON with ``--json``; else through ``text``, or as a table of columns."""
    if as_json:
        print_json(data)
    elif text is not None:
        text(data)
    else:
        print_table(columns, data)


def print_json(data: Any) -> None:
    """Data as indented JSON; times and other non-JSON values as their ``str``."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def print_table(columns: Sequence[Column], rows: Sequence[Row]) -> None:
    """Rows as a Rich table on stdout; piped or redirected, as wide as its cells need."""
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column.header)
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    console = Console()
    if not console.is_terminal:
        # Rich assumes 80 columns off a terminal and would cut names and times to
        # "2026-11…"; a pipe to grep or a file wants the whole cell.
        wide = console.options.update_width(100_000)
        console.width = max(console.width, console.measure(table, options=wide).maximum)
    console.print(table)
