"""``init``, ``serve`` and ``db``: setting up and running an instance."""

from __future__ import annotations

import click

from qprserver.audit import seal as audit_seal
from qprserver.cli.app import App, handle_errors, pass_app
from qprserver.cli.output import json_option, print_json
from qprserver.db import migrate
from qprserver.db.engine import Database
from qprserver.security.hostkeys import ensure_host_key
from qprserver.security.totp import ensure_key


@click.command()
@pass_app
def init(app: App) -> None:
    """Create data folders and host keys where missing, and migrate the schema."""
    settings = app.settings
    data_dir = settings.storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)
    from qprserver.storage.local import FileBlobStore

    FileBlobStore(data_dir, settings.server.node_id)  # its folders and this node's spool
    if ensure_key(settings.security.totp_key):
        click.echo(f"TOTP key created: {settings.security.totp_key}")
    if audit_seal.ensure_key(settings.security.audit_key):
        click.echo(f"audit key created: {settings.security.audit_key}")
    for path in settings.server.host_keys:
        if ensure_host_key(path):
            click.echo(f"host key created: {path}")
        else:
            click.echo(f"host key kept: {path}")
    web = settings.web
    if web.tls_cert is not None and web.tls_key is not None:
        from qprserver.security.tlscert import ensure_self_signed

        if ensure_self_signed(web.tls_cert, web.tls_key, web.host, app.clock.now()):
            click.echo(
                f"self-signed web certificate created for local use: {web.tls_cert} "
                "(browsers warn; put a real certificate there for production)"
            )

    async def work(db: Database) -> bool:
        await migrate.upgrade(db)
        security = settings.security
        return await audit_seal.start_keyed(
            db, security.audit_key, security.audit_checkpoint, app.clock.now()
        )

    if app.run(work, migrated=False):
        click.echo(f"audit checkpoint created: {settings.security.audit_checkpoint}")
    click.echo(f"database at revision {migrate.head_revision()}")
    click.echo(f"data folder ready: {data_dir}")


@click.command()
@pass_app
def serve(app: App) -> None:
    """Run the SFTP server in the foreground until SIGTERM/SIGINT."""
    from qprserver import service

    settings = app.settings
    handle_errors(lambda: service.run(settings))


@click.group("db")
def db_group() -> None:
    """Database schema: upgrade and check."""


@db_group.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Migrate the schema to the newest revision."""

    async def work(db: Database) -> str | None:
        await migrate.upgrade(db)
        return await migrate.current_revision(db)

    click.echo(f"database at revision {app.run(work, migrated=False)}")


@db_group.command("check")
@json_option
@pass_app
def db_check(app: App, as_json: bool) -> None:
    """Fail when the database and the models differ."""
    problems = app.run(migrate.check, migrated=False)
    if as_json:
        print_json({"ok": not problems, "problems": problems})
    if problems:
        raise click.ClickException("schema differs from models: " + "; ".join(problems))
    if not as_json:
        click.echo(f"database matches models at revision {migrate.head_revision()}")


@db_group.command("revision", hidden=True)
@click.option("-m", "--message", required=True)
@click.option("--rev-id", required=True)
@pass_app
def db_revision(app: App, message: str, rev_id: str) -> None:
    """Autogenerate a migration from the models (for developers)."""

    async def work(db: Database) -> None:
        await migrate.upgrade(db)
        await migrate.make_revision(db, message, rev_id)

    app.run(work, migrated=False)
