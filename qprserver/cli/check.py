"""``check``: test a quality report the way the acceptance office would, without delivering it.

Exit status 0 when the report would be accepted, 1 when it would be rejected (the
protocol is printed either way), 2 when the check itself cannot run (no config, no
schema for the year, unusable schema or rules file). No database is needed.
"""

from __future__ import annotations

from pathlib import Path

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import print_json
from qprserver.config import QbSettings, config_path_from
from qprserver.errors import ConfigError, QprError
from qprserver.qb.engine import check_report
from qprserver.qb.filename import parse_report_name


class CheckNotRun(click.ClickException):
    """The check could not run; kept apart from "rejected" (exit 1)."""

    exit_code = 2


def _settings(app: App, schema: Path | None, year: int | None, filename: str) -> QbSettings:
    if schema is None:
        return app.settings.qb
    try:
        config_path_from(app.config)
    except ConfigError:
        qb = QbSettings()  # --schema alone is enough for vendors without a server config
    else:
        qb = app.settings.qb
    name = parse_report_name(filename)
    effective = year if year is not None else (name.year if name else None)
    if effective is None:
        raise CheckNotRun("--schema needs --year when the file name holds no report year")
    return qb.model_copy(update={"schemas": {**qb.schemas, str(effective): schema.resolve()}})


@click.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--year", type=click.IntRange(1990, 2099), help="Report year; default: file name.")
@click.option(
    "--schema",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="XSD to use instead of the configured one (no config file needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the protocol as JSON.")
@pass_app
def check(app: App, file: Path, year: int | None, schema: Path | None, as_json: bool) -> None:
    """Check the quality report FILE (XML schema, plausibility rules) and print the protocol."""
    try:
        qb = _settings(app, schema, year, file.name)
        protocol = check_report(file, filename=file.name, settings=qb, year=year)
    except QprError as exc:
        raise CheckNotRun(str(exc)) from None
    if as_json:
        print_json(protocol.to_dict())
    else:
        click.echo(protocol.render_text(), nl=False)
    if not protocol.accepted:
        click.get_current_context().exit(1)
