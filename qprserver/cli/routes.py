"""``route``: which recipients get which kind of document from which Land."""

from __future__ import annotations

import click

from qprserver.cli.app import App, pass_app, print_json, print_table
from qprserver.db.engine import Database
from qprserver.exchange import routing


@click.group("route")
def route_group() -> None:
    """Routing rules: (kind, Land) → recipient."""


def _check_kind(app: App, kind: str) -> None:
    if kind not in app.settings.kinds:
        known = ", ".join(sorted(app.settings.kinds)) or "(none configured)"
        raise click.ClickException(f"unknown kind {kind!r}; configured: {known}")


@route_group.command("add")
@click.option("--kind", required=True, help="Document kind from the config.")
@click.option("--land", required=True, help="Two-letter Land code, e.g. NW.")
@click.option("--recipient", required=True, help="IK of the recipient account.")
@pass_app
def route_add(app: App, kind: str, land: str, recipient: str) -> None:
    """Send documents of KIND about facilities in LAND to RECIPIENT."""
    _check_kind(app, kind)

    async def work(db: Database) -> None:
        async with db.session() as session:
            await routing.add_route(
                session, app.actor(), app.clock.now(), kind=kind, land=land, recipient=recipient
            )

    app.run(work)
    click.echo(f"route {kind} {land.upper()} → {recipient.strip()} added")


@route_group.command("remove")
@click.option("--kind", required=True, help="Document kind from the config.")
@click.option("--land", required=True)
@click.option("--recipient", required=True)
@pass_app
def route_remove(app: App, kind: str, land: str, recipient: str) -> None:
    """Remove one routing rule."""

    async def work(db: Database) -> None:
        async with db.session() as session:
            await routing.remove_route(
                session, app.actor(), app.clock.now(), kind=kind, land=land, recipient=recipient
            )

    app.run(work)
    click.echo("route removed")


@route_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def route_list(app: App, as_json: bool) -> None:
    """All routing rules."""

    async def work(db: Database) -> list[tuple[str, str, str, str]]:
        async with db.read_session() as session:
            return await routing.list_routes(session)

    rows = app.run(work)
    if as_json:
        print_json([{"kind": k, "land": la, "recipient": ik, "name": n} for k, la, ik, n in rows])
        return
    print_table(None, ["Art", "Land", "Empfänger", "Name"], rows)
