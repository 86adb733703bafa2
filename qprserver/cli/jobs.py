"""``jobs``: the scheduled work, listed and run by hand."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, Row, emit, json_option, print_json
from qprserver.db.engine import Database
from qprserver.errors import InvalidInput
from qprserver.jobs import claims
from qprserver.jobs.registry import job_specs, run_job
from qprserver.jobs.scheduler import next_run


@click.group("jobs")
def jobs_group() -> None:
    """Scheduled jobs."""


@jobs_group.command("list")
@json_option
@pass_app
def jobs_list(app: App, as_json: bool) -> None:
    """Every job with its schedule, next run and last result."""
    settings = app.settings
    now = app.clock.now()

    async def work(db: Database) -> list[dict[str, object]]:
        last = await claims.last_runs(db)
        rows: list[dict[str, object]] = []
        for spec in job_specs(settings).values():
            run = last.get(spec.name)
            kind, value = spec.schedule
            upcoming = next_run(spec, settings, now)
            rows.append(
                {
                    "name": spec.name,
                    "description": spec.description,
                    "schedule": f"{value}" if kind == "cron" else f"every {value}s",
                    "dry_run": spec.dry_run is not None,
                    "next_run": upcoming.isoformat() if upcoming else None,
                    "last_period": run.period if run else None,
                    "last_status": run.status if run else None,
                    "last_finished": run.finished_at.isoformat()
                    if run and run.finished_at
                    else None,
                    "last_result": json.loads(run.result) if run else None,
                }
            )
        return rows

    zone = ZoneInfo(settings.jobs.timezone)
    columns = (
        Column("Job", "name"),
        Column("Zeitplan", "schedule"),
        Column("Nächster Lauf", value=lambda r: _local(r["next_run"], zone)),
        Column("Letzter Lauf", value=lambda r: _local(r["last_finished"], zone)),
        Column("Status", value=lambda r: r["last_status"] or "-"),
        Column("Ergebnis", value=_result_summary),
    )
    emit(app.run(work), as_json=as_json, columns=columns)


def _local(value: object, zone: ZoneInfo) -> str:
    """An ISO time from the rows as the operator's wall clock, or "-"."""
    if not isinstance(value, str):
        return "-"
    return datetime.fromisoformat(value).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")


def _result_summary(row: Row) -> str:
    """The start of the last run's result, enough to tell a failure from counts."""
    if row["last_result"] is None:
        return "-"
    return json.dumps(row["last_result"], ensure_ascii=False)[:60]


@jobs_group.command("run")
@click.argument("name")
@click.option(
    "--at",
    "at_text",
    default=None,
    help="Run as if at this ISO-8601 time; without an offset in jobs.timezone.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be done (retention).")
@json_option
@pass_app
def jobs_run(app: App, name: str, at_text: str | None, dry_run: bool, as_json: bool) -> None:
    """Run job NAME now (or as if at --at); a period already done is not redone."""
    from qprserver.config import LoggingSettings, service_environment
    from qprserver.observability import logs
    from qprserver.service import job_context

    # What went wrong in the run (a mail the relay refused, a failed job) on stderr,
    # in the format serve logs it; the outcome itself is printed below.
    quiet = LoggingSettings(format=app.settings.logging.format, level="warning")
    logs.setup(quiet, service_environment())

    if at_text is None:
        at = app.clock.now()
    else:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise click.ClickException(f"--at {at_text!r} is no ISO-8601 time") from None
        if at.tzinfo is None:
            # A wall-clock time means the schedules' zone, as in the config.
            at = at.replace(tzinfo=ZoneInfo(app.settings.jobs.timezone))

    async def work(db: Database) -> dict[str, object]:
        if name not in job_specs(app.settings):
            raise InvalidInput(
                f"unknown job {name!r}; jobs: {', '.join(sorted(job_specs(app.settings)))}"
            )
        ctx = job_context(app.settings, db, app.notifier())
        try:
            outcome = await run_job(ctx, name, at, dry_run=dry_run)
        finally:
            ctx.blobs.close()
        return {
            "job": outcome.job,
            "at": at.isoformat(),
            "period": outcome.period,
            "ran": outcome.ran,
            "result": outcome.result,
        }

    emit(app.run(work), as_json=as_json, text=_print_outcome)


def _print_outcome(data: dict[str, object]) -> None:
    state = "ran" if data["ran"] else "skipped (period already done)"
    click.echo(f"{data['job']} at {data['at']} for {data['period']}: {state}")
    print_json(data["result"])
