"""``registration``: the operator reviews self-registrations and prints activation letters."""

from __future__ import annotations

from pathlib import Path

import click

from qprserver.accounts import activation, review
from qprserver.accounts.enums import RegistrationState
from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database
from qprserver.db.models import PROCEDURES, REGISTRATION_STATES


@click.group("registration")
def registration_group() -> None:
    """Self-registrations: review, approve, reject, activation letters."""


COLUMNS = (
    Column("ID", "id"),
    Column("IK", "ik"),
    Column("Einrichtung", "institution"),
    Column(
        "Stand",
        value=lambda r: RegistrationState(r["state"]).label + (" (hängt)" if r["stuck"] else ""),
    ),
    Column("Verfahren", value=lambda r: ",".join(r["procedures"])),
    Column("Rollen", value=lambda r: ",".join(r["roles"])),
    Column("E-Mail", "email"),
    Column("Eingang", value=lambda r: r["created_at"][:16]),
)


@registration_group.command("list")
@click.option(
    "--state",
    type=click.Choice(REGISTRATION_STATES),
    default=None,
    help="Only registrations in this state.",
)
@json_option
@pass_app
def registration_list(app: App, state: str | None, as_json: bool) -> None:
    """Registrations, newest first; 'hängt' marks confirmed ones idle for a week."""
    settings = app.settings.registration

    async def work(db: Database) -> list[review.RegistrationSummary]:
        async with db.read_session() as session:
            found = await review.list_registrations(
                session, RegistrationState(state) if state else None
            )
            return [review.summary(r, app.clock.now(), settings) for r in found]

    emit(app.run(work), as_json=as_json, columns=COLUMNS)


@registration_group.command("show")
@click.argument("registration_id", type=int)
@json_option
@pass_app
def registration_show(app: App, registration_id: int, as_json: bool) -> None:
    """One registration with every field the participant gave."""
    settings = app.settings.registration

    async def work(db: Database) -> review.RegistrationSummary:
        async with db.read_session() as session:
            reg = await review.get_registration(session, registration_id)
            return review.summary(reg, app.clock.now(), settings)

    def text(s: review.RegistrationSummary) -> None:
        for key, value in s.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"{key:<13}{'-' if shown is None or shown == '' else shown}")

    emit(app.run(work), as_json=as_json, text=text)


@registration_group.command("approve")
@click.argument("registration_id", type=int)
@click.option(
    "--procedure",
    "procedures",
    multiple=True,
    type=click.Choice(PROCEDURES, case_sensitive=False),
    help="Procedure to approve; repeat for both (default: those applied for).",
)
@click.option("--land", default=None, help="Two-letter Land code; default: from the IK.")
@json_option
@pass_app
def registration_approve(
    app: App, registration_id: int, procedures: tuple[str, ...], land: str | None, as_json: bool
) -> None:
    """Approve an application and mail the participant what comes next."""
    settings = app.settings.registration

    async def work(db: Database) -> review.RegistrationSummary:
        async with db.session() as session:
            reg = await review.approve(
                session,
                app.actor(),
                app.clock.now(),
                registration_id,
                procedures=procedures or None,
                land=land,
                settings=settings,
                notifier=app.notifier(),
            )
            return review.summary(reg, app.clock.now(), settings)

    def text(s: review.RegistrationSummary) -> None:
        click.echo(f"registration {s['id']} ({s['ik']}) approved for {', '.join(s['procedures'])}")
        if settings.postal_activation:
            click.echo(
                f"print its activation letter: qprserver registration letter {s['id']} -o brief.pdf"
            )

    emit(app.run(work), as_json=as_json, text=text)


@registration_group.command("reject")
@click.argument("registration_id", type=int)
@click.option("--reason", required=True, help="Why; the participant reads it in the mail.")
@json_option
@pass_app
def registration_reject(app: App, registration_id: int, reason: str, as_json: bool) -> None:
    """Reject a registration with a reason and mail it to the participant."""
    settings = app.settings.registration

    async def work(db: Database) -> review.RegistrationSummary:
        async with db.session() as session:
            reg = await review.reject(
                session,
                app.actor(),
                app.clock.now(),
                registration_id,
                reason=reason,
                notifier=app.notifier(),
            )
            return review.summary(reg, app.clock.now(), settings)

    emit(
        app.run(work),
        as_json=as_json,
        text=lambda s: click.echo(f"registration {s['id']} ({s['ik']}) rejected"),
    )


@registration_group.command("letter")
@click.argument("registration_id", type=int, required=False)
@click.option(
    "--all", "all_due", is_flag=True, help="Every approved registration still without a letter."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="PDF file to write (one page per letter).",
)
@json_option
@pass_app
def registration_letter(
    app: App, registration_id: int | None, all_due: bool, output: Path, as_json: bool
) -> None:
    """Activation letter(s) as PDF with a new one-time code; earlier codes stop working."""
    if (registration_id is None) == (not all_due):
        raise click.UsageError("give either a registration ID or --all")
    settings = app.settings

    async def work(db: Database) -> list[activation.Letter]:
        async with db.session() as session:
            now = app.clock.now()
            ids = [registration_id] if registration_id is not None else None
            if ids is None:
                ids = await activation.letters_due(session, now)
            return [
                await activation.issue_letter(session, app.actor(), now, i, settings.registration)
                for i in ids
            ]

    letters = app.run(work)
    if letters:
        from qprserver.notify.letters import write_letters

        partial = output.with_name(output.name + ".part")
        with partial.open("wb") as out:
            write_letters(
                out,
                letters,
                sender=settings.registration.sender_address,
                portal_url=settings.mail.portal_url,
                today=app.clock.now(),
            )
        partial.replace(output)
    emit(
        {
            "file": str(output) if letters else None,
            "registrations": [x.registration_id for x in letters],
        },
        as_json=as_json,
        text=lambda s: click.echo(
            f"{len(letters)} letter(s) written to {output}" if letters else "no letters due"
        ),
    )
