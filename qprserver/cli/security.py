"""``account totp`` and ``bans``: second factor and brute-force bans."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option

if TYPE_CHECKING:
    # The account commands register ``totp`` as a subgroup; its modules load on use.
    from qprserver.db.engine import Database
    from qprserver.security import totp


@click.group("totp")
def totp_group() -> None:
    """Second factor (TOTP) of an account."""


@totp_group.command("enable")
@click.argument("ik")
@json_option
@pass_app
def totp_enable(app: App, ik: str, as_json: bool) -> None:
    """New TOTP secret: prints the otpauth URI, a QR code and single-use recovery codes."""
    from qprserver.security import totp

    settings = app.settings.security
    key = totp.load_key(settings.totp_key)

    async def work(db: Database) -> totp.Enrolment:
        async with db.session() as session:
            return await totp.enable(
                session, app.actor(), app.clock.now(), ik, key, settings.totp_issuer
            )

    enrolment = app.run(work)
    emit(
        {"uri": enrolment.uri, "recovery_codes": enrolment.recovery_codes},
        as_json=as_json,
        text=_print_enrolment,
    )


def _print_enrolment(data: dict[str, Any]) -> None:
    """The URI as a terminal QR code for the authenticator app, then the recovery codes."""
    import qrcode

    qr = qrcode.QRCode(border=1)
    qr.add_data(data["uri"])
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    click.echo(out.getvalue())
    click.echo(data["uri"])
    click.echo("\nWiederherstellungscodes (je einmal gültig, sicher aufbewahren):")
    for code in data["recovery_codes"]:
        click.echo(f"  {code}")


@totp_group.command("disable")
@click.argument("ik")
@pass_app
def totp_disable(app: App, ik: str) -> None:
    """Remove the account's second factor and its recovery codes."""
    from qprserver.security import totp

    async def work(db: Database) -> None:
        async with db.session() as session:
            await totp.disable(session, app.actor(), app.clock.now(), ik)

    app.run(work)
    click.echo(f"second factor of {ik.strip()} removed")


@totp_group.command("reset")
@click.argument("ik")
@pass_app
def totp_reset(app: App, ik: str) -> None:
    """Remove the second factor and mail the holder to enrol again at the next web login."""
    from qprserver.security import totp

    async def work(db: Database) -> None:
        async with db.session() as session:
            await totp.reset(session, app.actor(), app.clock.now(), ik, app.notifier())

    app.run(work)
    click.echo(f"second factor of {ik.strip()} reset; the holder was told by mail")


@click.group("bans")
def bans_group() -> None:
    """Addresses and accounts banned after failed logins."""


BAN_COLUMNS = (
    Column("Wer", "key"),
    Column("Gesperrt bis", "banned_until"),
    Column("Verstöße", "offences"),
)


@bans_group.command("list")
@json_option
@pass_app
def bans_list(app: App, as_json: bool) -> None:
    """Bans in force now."""
    from qprserver.security import bans

    now = app.clock.now()

    async def work(db: Database) -> list[dict[str, object]]:
        return [
            {
                "key": row.key,
                "banned_until": row.banned_until.isoformat() if row.banned_until else None,
                "offences": row.offences,
            }
            for row in await bans.list_bans(db, now)
        ]

    emit(app.run(work), as_json=as_json, columns=BAN_COLUMNS)


@bans_group.command("remove")
@click.argument("key")
@pass_app
def bans_remove(app: App, key: str) -> None:
    """Lift the ban of an address or IK (or addr:/account: key)."""
    from qprserver.security import bans

    async def work(db: Database) -> None:
        await bans.remove_ban(db, key)

    app.run(work)
    click.echo(f"ban on {key} lifted")
