"""Alembic driven from code: upgrade to head and check models against migrations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from qprserver.db.base import Base
from qprserver.db.engine import Database
from qprserver.errors import DatabaseNotReady

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config that points at the packaged migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of qprserver."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def upgrade(db: Database) -> None:
    """Bring the schema to the newest revision."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def check(db: Database) -> list[str]:
    """Differences between the database and the models; empty when they agree."""
    problems: list[str] = []
    async with db.engine.connect() as conn:
        current = await conn.run_sync(_current)
        head = head_revision()
        if current != head:
            problems.append(f"database at revision {current}, expected {head}")
            return problems
        problems.extend(str(d) for d in await conn.run_sync(_diff))
    return problems


async def require_head(db: Database) -> None:
    """Raise DatabaseNotReady unless the schema is at the newest revision."""
    current = await current_revision(db)
    head = head_revision()
    if current != head:
        raise DatabaseNotReady(
            f"database schema at {current or 'nothing'}, expected {head}: "
            "run `qprserver db upgrade`"
        )


def _revision(connection: Connection, message: str, rev_id: str) -> None:
    command.revision(alembic_config(connection), message=message, autogenerate=True, rev_id=rev_id)


async def make_revision(db: Database, message: str, rev_id: str) -> None:
    """Autogenerate a new migration from the models (a developer's tool)."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_revision, message, rev_id)
