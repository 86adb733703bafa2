"""Alembic driven from code: upgrade to head and check models against migrations.

Alembic is imported only where a schema is changed or compared: every CLI command
checks the revision first (``require_head``), and Alembic's import alone costs about
0.1 s. That check reads the revision ids from the migration files and the current one
with one query (a test compares the result with Alembic's own).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from qprserver.db import usage
from qprserver.db.engine import Database
from qprserver.errors import DatabaseNotReady

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config that points at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of qprserver."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _module_string(module: ast.Module, name: str) -> str | None:
    """The string assigned to a top-level name (``revision = "0005"``), if any."""
    for node in module.body:
        if isinstance(node, ast.AnnAssign):
            targets: list[ast.expr] = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            return None
    return None


def shipped_head() -> str:
    """The newest revision, read from the migration files without importing Alembic.

    The head is the one revision no other file names as its ``down_revision``
    (the migrations form one line; merges are never made here).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        module = ast.parse(path.read_text(encoding="utf-8"))
        revision = _module_string(module, "revision")
        if revision is None:
            continue
        revisions.add(revision)
        parent = _module_string(module, "down_revision")
        if parent is not None:
            parents.add(parent)
    heads = revisions - parents
    if len(heads) != 1:
        raise DatabaseNotReady(f"migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def _sqlite_foreign_keys(connection: Connection, on: bool) -> None:
    """Foreign keys on or off; SQLite ignores this inside a transaction, so it goes to
    the driver's connection before one begins."""
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def _foreign_key_violations(connection: Connection) -> list[Any]:
    return list(connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall())


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _diff(connection: Connection) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from qprserver.db.base import Base

    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to the newest revision (or to ``revision``).

    On SQLite, Alembic changes a table by copying it, dropping the old one and renaming
    the copy; with foreign keys on, dropping a table others refer to would cascade to
    their rows (an account's keys, documents, sessions). So foreign keys are off while
    the migrations run, checked before the commit, and on again after.
    """
    async with db.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            await conn.run_sync(_sqlite_foreign_keys, False)
        try:
            async with conn.begin():
                await conn.run_sync(_upgrade, revision)
                if sqlite and (broken := await conn.run_sync(_foreign_key_violations)):
                    raise DatabaseNotReady(f"migration left broken references: {broken[:5]}")
        finally:
            if sqlite:
                await conn.run_sync(_sqlite_foreign_keys, True)


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
        problems.extend(
            f"trigger {name} on documents missing (it keeps depositor_usage)"
            for name in await conn.run_sync(usage.missing_triggers)
        )
    return problems


async def require_head(db: Database) -> None:
    """Raise DatabaseNotReady unless the schema is at the newest revision."""
    try:
        async with db.engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    except DBAPIError:
        versions = []  # no table yet: nothing migrated
    current = versions[0][0] if len(versions) == 1 else None
    head = shipped_head()
    if current != head:
        raise DatabaseNotReady(
            f"database schema at {current or 'nothing'}, expected {head}: "
            "run `qprserver db upgrade`"
        )


def _revision(connection: Connection, message: str, rev_id: str) -> None:
    from alembic import command

    command.revision(alembic_config(connection), message=message, autogenerate=True, rev_id=rev_id)


async def make_revision(db: Database, message: str, rev_id: str) -> None:
    """Autogenerate a new migration from the models (a developer's tool)."""
    async with db.engine.begin() as conn:
        await conn.run_sync(_revision, message, rev_id)
