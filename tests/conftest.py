"""Fixtures shared by the whole suite: a real database per test on the chosen backend.

SQLite is the default. With ``QPR_TEST_DATABASE_URL`` set to a PostgreSQL URL every
test gets a schema of its own in that database, built by the migrations.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from qprserver.db.engine import Database
from tests.s3server import SeaweedS3

TEST_DATABASE_URL = os.environ.get("QPR_TEST_DATABASE_URL", "")
BACKEND = "postgresql" if TEST_DATABASE_URL.startswith("postgresql") else "sqlite"
SHARED = Path(__file__).resolve().parents[2] / "shared"
QB_DATA = Path(os.environ.get("QPR_QB_DATA", SHARED / "data" / "qb"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-backend",
        default=None,
        help="Fail unless the suite runs on this database backend (sqlite, postgresql).",
    )
    parser.addoption(
        "--require-tools",
        action="store_true",
        help="A test skipped because a client, tool or the real Qb data is missing fails "
        "instead (CI installs them all, so such a skip there is a broken set-up).",
    )


def pytest_report_header() -> str:
    return f"database backend: {BACKEND}"


def pytest_configure(config: pytest.Config) -> None:
    required = config.getoption("--require-backend")
    if required and required != BACKEND:
        raise pytest.UsageError(
            f"--require-backend={required} but the suite would run on {BACKEND}; "
            "set QPR_TEST_DATABASE_URL"
        )


# What the skip reasons of tests say when a tool, device or data folder is missing.
_MISSING = ("not installed", "is missing", "missing in", "not present")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and item.config.getoption("--require-tools")):
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    if any(words in reason for words in _MISSING):
        report.outcome = "failed"
        report.longrepr = f"--require-tools: skipped for a missing tool or data: {reason}"


async def _pg_admin_async(sql: str) -> None:
    engine = create_async_engine(TEST_DATABASE_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


def _pg_admin(sql: str) -> None:
    # A thread of its own: the test's event loop may already be current in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _pg_admin_async(sql)).result()


def make_database_settings(tmp_path: Path) -> tuple[DatabaseSettings, str | None]:
    """Settings for a fresh, empty database; the schema name to drop afterwards (PG)."""
    if BACKEND == "postgresql":
        schema = f"t_{uuid.uuid4().hex[:16]}"
        _pg_admin(f"CREATE SCHEMA {schema}")
        return DatabaseSettings.model_validate({"url": TEST_DATABASE_URL, "schema": schema}), schema
    url = f"sqlite+aiosqlite:///{tmp_path / 'qprserver.db'}"
    return DatabaseSettings.model_validate({"url": url}), None


def drop_schema(schema: str | None) -> None:
    if schema:
        _pg_admin(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def database_settings(tmp_path: Path) -> Iterator[DatabaseSettings]:
    """An empty database of the chosen backend, removed after the test."""
    settings, schema = make_database_settings(tmp_path)
    try:
        yield settings
    finally:
        drop_schema(schema)


@pytest.fixture
async def db(database_settings: DatabaseSettings) -> AsyncIterator[Database]:
    """A migrated database."""
    database = Database(database_settings)
    await migrate.upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the whole session, started when first asked for."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
