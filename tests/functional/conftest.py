"""An initialised qprserver instance in a temp folder, driven through its real CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.config import DatabaseSettings, load_config
from qprserver.db.engine import Database
from tests.functional.harness import (
    EXAMPLE,
    FACILITY_NW,
    LV_BY,
    LV_NW,
    MD_NW,
    Running,
    Server,
    kill_group,
    make_settings,
    provision,
    serve_process,
    start_server,
    wait_listening,
)
from tests.functional.smtp import SmtpServer, free_port
from tests.functional.web import Web, make_web

T = TypeVar("T")


@dataclass
class Instance:
    """A config file and helpers to run ``qprserver`` against it."""

    root: Path
    config: Path

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "QPRSERVER_CONFIG"}
        return subprocess.run(
            [sys.executable, "-m", "qprserver", "--config", str(self.config), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must be refused: exit 1 and one line on stderr, returned."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 1, f"{args}: exit {result.returncode}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"{args}: not one line: {result.stderr}"
        return lines[0]

    def in_session(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run work in one write transaction as someone with write access to the
        database would (no audit key)."""

        async def main() -> T:
            db = Database(load_config(self.config).database)
            try:
                async with db.session() as session:
                    return await work(session)
            finally:
                await db.dispose()

        # A thread of its own: a test's event loop may already run in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def sql(self, *statements: str) -> None:
        """Run SQL statements in one transaction (see ``in_session``)."""

        async def work(session: AsyncSession) -> None:
            for statement in statements:
                await session.execute(text(statement))

        self.in_session(work)


def write_config(root: Path, database: DatabaseSettings, extra: str = "") -> Path:
    config = root / "qprserver.toml"
    schema = f'schema = "{database.schema_name}"\n' if database.schema_name else ""
    config.write_text(
        "[server]\nport = 0\n"
        'host_keys = ["keys/ssh_host_ed25519_key", "keys/ssh_host_rsa_key"]\n'
        '[storage]\ndata_dir = "data"\n'
        f'[database]\nurl = "{database.url}"\n{schema}' + extra,
        encoding="utf-8",
    )
    return config


@pytest.fixture
def instance(tmp_path: Path, database_settings: DatabaseSettings) -> Iterator[Instance]:
    """A freshly initialised instance."""
    inst = Instance(tmp_path, write_config(tmp_path, database_settings))
    inst.ok("init")
    yield inst


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port, keeping what it receives."""
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    """A running SFTP server with a routed set-up: MD NW → LV NW and the facility."""
    settings = make_settings(tmp_path, db.settings.url, db.settings.schema_name)
    srv = await start_server(settings, db, tmp_path)
    await srv.add_account(MD_NW, ["depositor"], name="Medizinischer Dienst NW")
    await srv.add_account(LV_NW, ["recipient"], name="Landesverband NW", email="lv@example.org")
    await srv.add_account(FACILITY_NW, ["recipient"], name="Pflegeheim Am See")
    await srv.add_account(LV_BY, ["recipient"], name="Landesverband BY")
    await srv.add_route("pruefbericht", "NW", LV_NW)
    await srv.add_route("pruefbericht", "BY", LV_BY)
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


@pytest.fixture
async def running(
    request: pytest.FixtureRequest, tmp_path: Path, database_settings: DatabaseSettings
) -> AsyncIterator[Running]:
    """`serve` on a free port; server settings from the test's parameter."""
    server_extra: str = getattr(request, "param", "")
    port = free_port()
    config = write_config(tmp_path, database_settings)
    example = EXAMPLE.read_text(encoding="utf-8")
    kinds = example[example.index("[kinds.") :]
    config.write_text(
        config.read_text().replace("port = 0\n", f"port = {port}\n{server_extra}", 1) + "\n" + kinds
    )
    Instance(tmp_path, config).ok("init")
    run = Running(await serve_process(config), port, config)
    try:
        await provision(run)
        await wait_listening(run)
        yield run
    finally:
        await kill_group(run.proc)


@pytest.fixture
async def web(server: Server) -> Web:
    """The web portal's app on the running server's parts (as ``serve`` builds it)."""
    return make_web(server)
