"""``route``: which recipients get which kind of document from which Land."""

from __future__ import annotations

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
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


ROUTE_COLUMNS = (
    Column("Art", "kind"),
    Column("Land", "land"),
    Column("Empfänger", "recipient"),
    Column("Name", "name"),
)


@route_group.command("list")
@json_option
@pass_app
def route_list(app: App, as_json: bool) -> None:
    """All routing rules."""

    async def work(db: Database) -> list[dict[str, str]]:
        async with db.read_session() as session:
            return [
                {"kind": kind, "land": land, "recipient": ik, "name": name}
                for kind, land, ik, name in await routing.list_routes(session)
            ]

    emit(app.run(work), as_json=as_json, columns=ROUTE_COLUMNS)
