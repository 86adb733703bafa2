"""The ``qprserver`` command: a thin edge over the domain.

Commands are imported only when they run: the domain brings SQLAlchemy, asyncssh,
lxml, Alembic and more, about a second of imports that ``--help`` and a quick
``account list`` should not pay. Each top-level command is named here with its
module and its one-line help, so the overview needs none of them (a test checks that
the help texts here match the commands').
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

from qprserver import __version__
from qprserver.cli.app import App
from qprserver.errors import QprError


class Entry(NamedTuple):
    """Where a top-level command lives and what ``--help`` says about it."""

    module: str
    attribute: str
    short_help: str


COMMANDS: dict[str, Entry] = {
    "init": Entry(
        "qprserver.cli.admin",
        "init",
        "Create data folders and host keys where missing, and migrate the schema.",
    ),
    "serve": Entry(
        "qprserver.cli.admin",
        "serve",
        "Run the SFTP server in the foreground until SIGTERM/SIGINT.",
    ),
    "db": Entry("qprserver.cli.admin", "db_group", "Database schema: upgrade and check."),
    "account": Entry("qprserver.cli.accounts", "account", "Accounts keyed by IK."),
    "registration": Entry(
        "qprserver.cli.registrations",
        "registration_group",
        "Self-registrations: review, approve, reject, activation letters.",
    ),
    "audit": Entry("qprserver.cli.audit", "audit_group", "The audit log."),
    "route": Entry(
        "qprserver.cli.routes", "route_group", "Routing rules: (kind, Land) → recipient."
    ),
    "document": Entry(
        "qprserver.cli.documents",
        "document_group",
        "Delivered documents and their download receipts.",
    ),
    "mail": Entry("qprserver.cli.mail", "mail_group", "Outgoing mail."),
    "jobs": Entry("qprserver.cli.jobs", "jobs_group", "Scheduled jobs."),
    "bans": Entry(
        "qprserver.cli.security",
        "bans_group",
        "Addresses and accounts banned after failed logins.",
    ),
    "status": Entry(
        "qprserver.cli.status",
        "status",
        "Health and readiness of the running instance (from its [metrics] listener).",
    ),
    "cluster": Entry("qprserver.cli.cluster", "cluster_group", "The nodes serving this database."),
    "storage": Entry(
        "qprserver.cli.storage", "storage_group", "The blob store: check it, migrate it to S3."
    ),
    "qb": Entry(
        "qprserver.cli.qb",
        "qb_group",
        "The Qb-R reporting year: calendar, registrations, positive list, lists, status.",
    ),
    "check": Entry(
        "qprserver.cli.check",
        "check",
        "Check the quality report FILE (XML schema, plausibility rules) and print the protocol.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command = getattr(importlib.import_module(entry.module), entry.attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        # ``App.run`` translates the domain errors of a command's database work; this
        # catches those a command raises itself (an IK parsed from an option, say):
        # one line and exit 1, never a traceback.
        try:
            return super().invoke(ctx)
        except QprError as exc:
            raise click.ClickException(str(exc)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Same layout as click's, from the table above instead of the commands.
        rows = [(name, COMMANDS[name].short_help) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (TOML). Default: $QPRSERVER_CONFIG.",
)
@click.version_option(__version__, prog_name="qprserver")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """qprserver: SFTP document exchange for care and hospital quality reports."""
    ctx.obj = App(config=config)


def main() -> None:
    cli(prog_name="qprserver")
