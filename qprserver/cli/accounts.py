"""``account``: provisioning accounts, keys and passwords."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from qprserver.accounts import service as accounts
from qprserver.accounts.enums import AccountStatus, Role
from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database
from qprserver.db.models import PROCEDURES, ROLES
from qprserver.errors import InvalidKey


@click.group()
def account() -> None:
    """Accounts keyed by IK."""


@account.command("add")
@click.argument("ik")
@click.option("--name", required=True, help="Display name of the institution.")
@click.option("--email", default=None, help="Address for notifications.")
@click.option(
    "--role",
    "roles",
    required=True,
    multiple=True,
    type=click.Choice(ROLES),
    help="Role; repeat for several.",
)
@click.option("--land", default=None, help="Two-letter Land code; default: from the IK.")
@click.option(
    "--procedure",
    "procedures",
    multiple=True,
    type=click.Choice(PROCEDURES, case_sensitive=False),
    help="Procedure the account may use; repeat for both (default: both).",
)
@json_option
@pass_app
def account_add(
    app: App,
    ik: str,
    name: str,
    email: str | None,
    roles: tuple[str, ...],
    land: str | None,
    procedures: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create an account for an IK."""

    async def work(db: Database) -> accounts.AccountSummary:
        async with db.session() as session:
            acc = await accounts.add_account(
                session,
                app.actor(),
                app.clock.now(),
                ik=ik,
                name=name,
                email=email,
                roles=roles,
                land=land,
                procedures=procedures or None,
                notifier=app.notifier(),
            )
            await session.refresh(acc, ["keys", "password"])
            return accounts.account_summary(acc)

    emit(
        app.run(work),
        as_json=as_json,
        text=lambda s: click.echo(f"account {s['ik']} created ({', '.join(s['roles'])})"),
    )


ACCOUNT_COLUMNS = (
    Column("Login", "login"),
    Column("IK", "ik"),
    Column("Name", "name"),
    Column("Rollen", value=lambda r: ",".join(r["roles"])),
    Column("Land", "land"),
    Column("Status", "status"),
    Column("Verfahren", value=lambda r: ",".join(r["procedures"])),
    Column("E-Mail", "email"),
    Column("Schlüssel", value=lambda r: len(r["keys"])),
)


@account.command("list")
@click.option(
    "--role", type=click.Choice(ROLES), default=None, help="Only accounts with this role."
)
@json_option
@pass_app
def account_list(app: App, role: str | None, as_json: bool) -> None:
    """All accounts."""

    async def work(db: Database) -> list[accounts.AccountSummary]:
        async with db.read_session() as session:
            return [
                accounts.account_summary(a)
                for a in await accounts.list_accounts(session, Role(role) if role else None)
            ]

    emit(app.run(work), as_json=as_json, columns=ACCOUNT_COLUMNS)


@account.command("show")
@click.argument("ik")
@json_option
@pass_app
def account_show(app: App, ik: str, as_json: bool) -> None:
    """One account with its keys."""

    async def work(db: Database) -> accounts.AccountSummary:
        async with db.read_session() as session:
            return accounts.account_summary(await accounts.get_account(session, ik))

    emit(app.run(work), as_json=as_json, text=_print_account)


def _print_account(summary: accounts.AccountSummary) -> None:
    click.echo(f"login       {summary['login']}")
    click.echo(f"ik          {summary['ik']}")
    if summary["site"] is not None:
        click.echo(f"standort    {summary['site']}")
    click.echo(f"name        {summary['name']}")
    click.echo(f"email       {summary['email'] or '-'}")
    click.echo(f"roles       {', '.join(summary['roles'])}")
    click.echo(f"land        {summary['land'] or '-'}")
    click.echo(f"status      {summary['status']}")
    click.echo(f"procedures  {', '.join(summary['procedures'])}")
    click.echo(f"password    {'yes' if summary['password'] else 'no'}")
    click.echo(f"created_at  {summary['created_at']}")
    for k in summary["keys"]:
        click.echo(f"key         {k['fingerprint']} {k['algorithm']} {k['comment']}")


@account.command("update")
@click.argument("ik")
@click.option("--name", default=None, help="New display name.")
@click.option("--email", default=None, help="New address; '' removes it.")
@click.option("--notify/--no-notify", default=None, help="Mails on or off.")
@click.option("--bundles/--no-bundles", default=None, help="Weekly ZIP bundles on or off.")
@click.option(
    "--allow-network",
    "networks",
    multiple=True,
    help="Allowed source network (CIDR); repeat; '' = any.",
)
@click.option("--max-sessions", type=click.IntRange(0), default=None, help="0 = unlimited.")
@click.option("--expires", default=None, help="ISO date/time after which logins fail; '' = never.")
@click.option(
    "--procedure",
    "procedures",
    multiple=True,
    type=click.Choice(PROCEDURES, case_sensitive=False),
    help="Procedures the account may use from now on; repeat for both.",
)
@pass_app
def account_update(
    app: App,
    ik: str,
    name: str | None,
    email: str | None,
    notify: bool | None,
    bundles: bool | None,
    networks: tuple[str, ...],
    max_sessions: int | None,
    expires: str | None,
    procedures: tuple[str, ...],
) -> None:
    """Change an account's name, address, switches, procedures and restrictions."""
    expires_at: datetime | None = None
    if expires is not None:
        if expires == "":
            expires_at = datetime(1, 1, 1, tzinfo=UTC)
        else:
            try:
                expires_at = datetime.fromisoformat(expires)
            except ValueError:
                raise click.ClickException(f"--expires {expires!r} is no ISO date") from None
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)

    async def work(db: Database) -> str:
        async with db.session() as session:
            acc = await accounts.update_account(
                session,
                app.actor(),
                app.clock.now(),
                ik,
                name=name,
                email=email,
                notify=notify,
                bundles=bundles,
                allowed_networks=list(networks) if networks else None,
                max_sessions=max_sessions,
                expires_at=expires_at,
                procedures=procedures or None,
            )
            return acc.login

    click.echo(f"account {app.run(work)} updated")


def _set_status(app: App, ik: str, status: AccountStatus) -> None:
    async def work(db: Database) -> str:
        async with db.session() as session:
            acc = await accounts.set_status(
                session, app.actor(), app.clock.now(), ik, status, app.notifier()
            )
            return acc.login

    click.echo(
        f"account {app.run(work)} {'enabled' if status is AccountStatus.ACTIVE else 'disabled'}"
    )


@account.command("disable")
@click.argument("ik")
@pass_app
def account_disable(app: App, ik: str) -> None:
    """Stop an account from logging in."""
    _set_status(app, ik, AccountStatus.DISABLED)


@account.command("enable")
@click.argument("ik")
@pass_app
def account_enable(app: App, ik: str) -> None:
    """Allow a disabled account to log in again."""
    _set_status(app, ik, AccountStatus.ACTIVE)


@account.group("key")
def key_group() -> None:
    """SSH public keys of an account."""


@key_group.command("add")
@click.argument("ik")
@click.argument("pubkey_file", type=click.Path(dir_okay=False, allow_dash=True))
@pass_app
def key_add(app: App, ik: str, pubkey_file: str) -> None:
    """Add the public key in PUBKEY_FILE (OpenSSH format; - for stdin)."""
    if pubkey_file == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(pubkey_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"{pubkey_file}: cannot read key file: {exc}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise click.ClickException(
            f"{pubkey_file}: expected exactly one public key line, found {len(lines)}"
        )

    async def work(db: Database) -> str:
        async with db.session() as session:
            row = await accounts.add_key(
                session, app.actor(), app.clock.now(), ik, lines[0], app.notifier()
            )
            return row.fingerprint

    try:
        fingerprint = app.run(work)
    except InvalidKey as exc:  # pragma: no cover - app.run translates already
        raise click.ClickException(str(exc)) from None
    click.echo(f"key {fingerprint} added")


KEY_COLUMNS = (
    Column("Fingerprint", "fingerprint"),
    Column("Typ", "algorithm"),
    Column("Bit", "bits"),
    Column("Kommentar", "comment"),
    Column("Angelegt", "created_at"),
)


@key_group.command("list")
@click.argument("ik")
@json_option
@pass_app
def key_list(app: App, ik: str, as_json: bool) -> None:
    """The account's keys."""

    async def work(db: Database) -> list[dict[str, object]]:
        async with db.read_session() as session:
            acc = await accounts.get_account(session, ik)
            return [
                {
                    "fingerprint": k.fingerprint,
                    "algorithm": k.algorithm,
                    "bits": k.bits,
                    "comment": k.comment,
                    "created_at": k.created_at.isoformat(),
                }
                for k in acc.keys
            ]

    emit(app.run(work), as_json=as_json, columns=KEY_COLUMNS)


@key_group.command("remove")
@click.argument("ik")
@click.argument("fingerprint")
@pass_app
def key_remove(app: App, ik: str, fingerprint: str) -> None:
    """Remove a key by its SHA256 fingerprint."""

    async def work(db: Database) -> None:
        async with db.session() as session:
            await accounts.remove_key(session, app.actor(), app.clock.now(), ik, fingerprint)

    app.run(work)
    click.echo("key removed")


@account.command("password")
@click.argument("ik")
@pass_app
def account_password(app: App, ik: str) -> None:
    """Set a new password: prompted on a terminal, else read from stdin."""
    if sys.stdin.isatty():
        password = click.prompt("Neues Passwort", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")

    async def work(db: Database) -> None:
        async with db.session() as session:
            await accounts.set_password(session, app.actor(), app.clock.now(), ik, password)

    app.run(work)
    click.echo(f"password for {ik.strip()} set")


def _add_totp() -> None:
    # ``account totp ...`` lives beside ``bans`` in the security module.
    from qprserver.cli.security import totp_group

    account.add_command(totp_group)


_add_totp()
