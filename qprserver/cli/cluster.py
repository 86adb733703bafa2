"""``cluster status``: the nodes serving this database, their sessions and heartbeats."""

from __future__ import annotations

from typing import Any

import click

from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database


@click.group("cluster")
def cluster_group() -> None:
    """The nodes serving this database."""


@cluster_group.command("status")
@json_option
@pass_app
def cluster_status(app: App, as_json: bool) -> None:
    """List nodes with their last heartbeat and open sessions; dead ones are marked."""
    from qprserver.accounts.sessions import LEASE_SECONDS, cluster_status

    now = app.clock.now()

    async def work(db: Database) -> list[dict[str, Any]]:
        return [
            {
                "id": node.id,
                "name": node.name,
                "host": node.host,
                "pid": node.pid,
                "started_at": node.started_at.isoformat(timespec="seconds"),
                "heartbeat_at": node.heartbeat_at.isoformat(timespec="seconds"),
                "heartbeat_age_seconds": round((now - node.heartbeat_at).total_seconds(), 1),
                "alive": node.alive,
                "sessions": node.sessions,
            }
            for node in await cluster_status(db, now)
        ]

    rows = app.run(work)
    emit(
        rows,
        as_json=as_json,
        columns=[
            Column("Node", "name"),
            Column("Host", "host"),
            Column("PID", "pid"),
            Column("Heartbeat", value=lambda r: f"{r['heartbeat_age_seconds']:.0f} s ago"),
            Column(
                "State",
                value=lambda r: "alive" if r["alive"] else f"dead (> {LEASE_SECONDS:.0f} s)",
            ),
            Column(
                "Sessions",
                value=lambda r: (
                    ", ".join(f"{k} {v}" for k, v in sorted(r["sessions"].items())) or "0"
                ),
            ),
        ],
    )
