"""Nodes in the database: ``cluster status`` lists them with heartbeat and sessions,
and SQLite refuses a second node."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from qprserver.accounts.sessions import LEASE
from qprserver.clock import SystemClock
from qprserver.db.engine import Database
from qprserver.db.models import Node
from qprserver.errors import StartupError
from qprserver.notify.outbox import Notifier
from qprserver.service import build_context
from qprserver.sftp.server import SFTPListener
from tests.conftest import BACKEND
from tests.functional.conftest import Instance, write_config
from tests.functional.harness import LV_NW, Server


async def _add_node(db: Database, name: str, host: str, age: timedelta) -> None:
    at = SystemClock().now() - age
    async with db.session() as session:
        await session.execute(
            insert(Node).values(name=name, host=host, pid=4242, started_at=at, heartbeat_at=at)
        )


async def test_cluster_status_lists_live_and_dead_nodes_with_their_sessions(
    server: Server, tmp_path: Path, db: Database
) -> None:
    await _add_node(db, "gone", "other-host", LEASE + timedelta(seconds=5))
    async with server.connect(LV_NW):
        await server.settled()  # the login's session row is written beside the session
        cli = Instance(tmp_path, write_config(tmp_path, db.settings))
        nodes = {node["name"]: node for node in cli.json("cluster", "status")}
        table = cli.ok("cluster", "status")
    me = nodes[server.settings.server.node_id]
    assert me["alive"] is True and me["sessions"] == {"sftp": 1}
    assert me["heartbeat_age_seconds"] < LEASE.total_seconds()
    assert nodes["gone"]["alive"] is False and nodes["gone"]["sessions"] == {}
    assert "dead" in table and "sftp 1" in table


@pytest.mark.skipif(BACKEND != "sqlite", reason="the refusal is SQLite's; PostgreSQL takes it")
async def test_sqlite_refuses_a_second_node_with_a_message_that_names_it(
    server: Server, db: Database
) -> None:
    await _add_node(db, "sftp2", "other-host", timedelta(0))
    second = SFTPListener(build_context(server.settings, db, Notifier(server.settings.mail)))
    with pytest.raises(StartupError, match=r"sftp2 auf other-host.*PostgreSQL"):
        await second.start()
    second.ctx.blobs.close()


@pytest.mark.skipif(BACKEND != "postgresql", reason="several nodes need PostgreSQL")
async def test_postgresql_takes_a_second_node(server: Server, db: Database) -> None:
    await _add_node(db, "sftp2", "other-host", timedelta(0))
    second = SFTPListener(build_context(server.settings, db, Notifier(server.settings.mail)))
    await second.start()
    try:
        assert second.port > 0
    finally:
        await second.stop(grace=0)
        second.ctx.blobs.close()
