"""``audit``: reading and verifying the audit log."""

from __future__ import annotations

import json

import click

from qprserver.audit import chain as audit
from qprserver.audit import seal as audit_seal
from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database
from qprserver.db.models import AuditEvent
from qprserver.ik import IK


@click.group("audit")
def audit_group() -> None:
    """The audit log."""


def _event_dict(event: AuditEvent) -> dict[str, object]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "target": event.target,
        "source": event.source,
        "details": json.loads(event.details),
        "hash": event.hash,
    }


EVENT_COLUMNS = tuple(
    Column(key, key) for key in ("id", "at", "actor", "action", "target", "source")
)


@audit_group.command("list")
@click.option("--account", "account_ik", help="Only events by or about this IK.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@json_option
@pass_app
def audit_list(app: App, account_ik: str | None, limit: int, as_json: bool) -> None:
    """The newest audit events first."""
    ik = IK.parse(account_ik).value if account_ik else None

    async def work(db: Database) -> list[dict[str, object]]:
        async with db.read_session() as session:
            rows = await audit.events(session, account=ik, limit=limit)
            return [_event_dict(e) for e in rows]

    emit(app.run(work), as_json=as_json, columns=EVENT_COLUMNS)


@audit_group.command("verify")
@pass_app
def audit_verify(app: App) -> None:
    """Check the whole audit log against its key and checkpoint; move the checkpoint."""
    security = app.settings.security

    async def work(db: Database) -> int:
        count, _head = await audit_seal.verify_and_checkpoint(
            db, security.audit_key, security.audit_checkpoint, app.clock.now(), full=True
        )
        return count

    count = app.run(work)
    click.echo(f"audit log intact: {count} events verified")
