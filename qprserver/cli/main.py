"""The ``qprserver`` command: a thin edge over the domain."""

from __future__ import annotations

import click

from qprserver import __version__
from qprserver.cli.accounts import account
from qprserver.cli.admin import db_group, init, serve
from qprserver.cli.app import App
from qprserver.cli.audit import audit_group
from qprserver.cli.check import check
from qprserver.cli.documents import document_group
from qprserver.cli.jobs import jobs_group
from qprserver.cli.mail import mail_group
from qprserver.cli.routes import route_group
from qprserver.cli.security import bans_group, totp_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


cli.add_command(init)
cli.add_command(serve)
cli.add_command(db_group)
cli.add_command(account)
cli.add_command(audit_group)
cli.add_command(route_group)
cli.add_command(document_group)
cli.add_command(mail_group)
cli.add_command(jobs_group)
cli.add_command(bans_group)
cli.add_command(check)
account.add_command(totp_group)


def main() -> None:
    cli(prog_name="qprserver")
