"""`qprserver serve` as a real process: shutdown grace, idle timeout, workers."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from sqlalchemy import select

from qprserver import accounts, routing
from qprserver.clock import SystemClock
from qprserver.config import DatabaseSettings, load_config
from qprserver.db.engine import Database
from qprserver.db.models import Document
from tests.functional.conftest import Instance, write_config
from tests.functional.harness import ADMIN, EXAMPLE, FACILITY_NW, LV_NW, MD_NW, pdf_bytes
from tests.functional.smtp import free_port


class Running:
    """A `qprserver serve` process and keys of its two accounts."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, config: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config
        self.keys: dict[str, asyncssh.SSHKey] = {}

    def connect(self, ik: str) -> Any:
        return asyncssh.connect(
            "127.0.0.1", self.port, username=ik, client_keys=[self.keys[ik]], known_hosts=None
        )

    async def documents(self) -> list[str]:
        db = Database(load_config(self.config).database)
        try:
            async with db.read_session() as session:
                return list((await session.scalars(select(Document.name))).all())
        finally:
            await db.dispose()


async def _provision(run: Running) -> None:
    db = Database(load_config(run.config).database)
    try:
        async with db.session() as session:
            now = SystemClock().now()
            for ik, role in ((MD_NW, "depositor"), (LV_NW, "recipient")):
                key = asyncssh.generate_private_key("ssh-ed25519")
                await accounts.add_account(
                    session, ADMIN, now, ik=ik, name=ik, email=None, roles=[role]
                )
                await accounts.add_key(
                    session, ADMIN, now, ik, key.export_public_key().decode().strip()
                )
                run.keys[ik] = key
            await routing.add_route(
                session, ADMIN, now, kind="pruefbericht", land="NW", recipient=LV_NW
            )
    finally:
        await db.dispose()


async def _serve(config: Path) -> asyncio.subprocess.Process:
    """Start `qprserver serve` with a config, output discarded."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qprserver", "--config", str(config), "serve",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _wait_listening(run: Running) -> None:
    for _ in range(400):
        if run.proc.returncode is not None:
            raise AssertionError("server exited early")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", run.port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError("server did not start listening")


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
    run = Running(await _serve(config), port, config)
    try:
        await _provision(run)
        await _wait_listening(run)
        yield run
    finally:
        if run.proc.returncode is None:
            run.proc.kill()
        await run.proc.wait()


@pytest.mark.parametrize("running", ["shutdown_grace = 20.0\n"], indirect=True)
async def test_sigterm_lets_a_running_upload_finish_and_refuses_new_logins(
    running: Running,
) -> None:
    data = pdf_bytes(2_000_000)
    name = f"{FACILITY_NW}_grace.pdf"
    async with running.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open(f"/outbox/{name}", "wb")
        await f.write(data[:1_000_000], 0)
        running.proc.send_signal(signal.SIGTERM)
        # Once shutdown has begun, new connections are refused.
        for _ in range(200):
            try:
                probe = await running.connect(LV_NW)
            except (OSError, asyncssh.Error):
                break
            probe.close()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("server still accepts logins after SIGTERM")
        await f.write(data[1_000_000:], 1_000_000)
        await f.close()
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0
    assert await running.documents() == [name]


@pytest.mark.parametrize("running", ["shutdown_grace = 0.5\n"], indirect=True)
async def test_an_upload_cut_by_shutdown_is_kept_across_a_restart_and_resumed_there(
    running: Running, tmp_path: Path
) -> None:
    name = f"{FACILITY_NW}_cut.pdf"
    data = pdf_bytes(100_000)
    async with running.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open(f"/outbox/{name}", "wb")
        await f.write(data[:50_000], 0)
        running.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(conn.wait_closed(), 30)
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0
    assert await running.documents() == []
    tmp = running.config.parent / "data" / "tmp"
    (kept,) = tmp.iterdir()
    stray = tmp / "upload-000000000000000000000000.part"
    stray.write_bytes(b"left by a killed server")
    # The next start sweeps what a killed server left, not what is kept to resume.
    second = await _spawn_second(running, tmp_path)
    try:
        assert sorted(tmp.iterdir()) == [kept]
        async with second.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
            assert (await sftp.stat(f"/outbox/{name}")).size == 50_000
            async with sftp.open(f"/outbox/{name}", "ab") as f:  # WRITE|APPEND|CREAT
                await f.write(data[50_000:], 50_000)
        assert await running.documents() == [name]
        assert list(tmp.iterdir()) == []
    finally:
        second.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.proc.wait(), 30)


@pytest.mark.parametrize("running", ["idle_timeout = 1.0\n"], indirect=True)
async def test_an_idle_session_is_closed(running: Running) -> None:
    async with running.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert "inbox" in await sftp.listdir("/")
        await asyncio.wait_for(conn.wait_closed(), 15)
    assert running.proc.returncode is None  # the server itself goes on


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_two_worker_processes_share_the_port_and_serve_logins(
    running: Running,
) -> None:
    for i in range(6):
        async with (
            running.connect(MD_NW) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(f"/outbox/{FACILITY_NW}_w{i}.pdf", "wb") as f,
        ):
            await f.write(pdf_bytes(seed=bytes([i])))
    assert sorted(await running.documents()) == [f"{FACILITY_NW}_w{i}.pdf" for i in range(6)]
    running.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0


async def _spawn_second(run: Running, tmp_path: Path) -> Running:
    """A second `serve` process on the same database and data folder, another port."""
    port = free_port()
    config = tmp_path / "second.toml"
    text = run.config.read_text().replace(f"port = {run.port}\n", f"port = {port}\n", 1)
    config.write_text(text)
    second = Running(await _serve(config), port, config)
    second.keys = run.keys
    await _wait_listening(second)
    return second


@pytest.mark.parametrize("running", [""], indirect=True)
async def test_a_ban_earned_at_one_server_process_holds_at_another(
    running: Running, tmp_path: Path
) -> None:
    threshold = load_config(running.config).security.ban_threshold
    second = await _spawn_second(running, tmp_path)
    try:
        async with second.connect(LV_NW) as before:  # admitted before any failure
            assert before is not None
        for _ in range(threshold):
            with pytest.raises(asyncssh.PermissionDenied):
                await asyncssh.connect(
                    "127.0.0.1",
                    running.port,
                    username=LV_NW,
                    password="falsch falsch falsch",
                    client_keys=None,
                    known_hosts=None,
                )
        # The scores reach the database asynchronously; the other process then refuses
        # even the right key (at connect or at the start of authentication).
        for _ in range(200):
            try:
                conn = await second.connect(LV_NW)
            except (OSError, asyncssh.Error):
                break
            conn.close()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the second server still lets the banned address in")
    finally:
        second.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.proc.wait(), 30)
