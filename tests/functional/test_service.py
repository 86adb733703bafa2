"""`qprserver serve` as a real process: shutdown grace, idle timeout, workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import asyncssh
import pytest

from qprserver.accounts.sessions import cluster_status
from qprserver.clock import SystemClock
from qprserver.config import DatabaseSettings, load_config
from qprserver.db.engine import Database
from tests.conftest import BACKEND
from tests.functional.conftest import Instance, write_config
from tests.functional.harness import (
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Running,
    kill_group,
    pdf_bytes,
    serve_process,
    wait_listening,
)
from tests.functional.smtp import free_port


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
    tmp = running.config.parent / "data" / "spool" / load_config(running.config).server.node_id
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


@pytest.mark.skipif(
    BACKEND == "sqlite", reason="SQLite refuses a second node (tests/functional/test_cluster.py)"
)
async def test_another_node_starting_on_the_same_data_folder_leaves_uploads_in_progress_alone(
    running: Running, tmp_path: Path
) -> None:
    name = f"{FACILITY_NW}_zwei_knoten.pdf"
    data = pdf_bytes(100_000)
    async with running.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        f = await sftp.open(f"/outbox/{name}", "wb")
        await f.write(data[:50_000], 0)
        # The other node's start-up sweep clears its own spool only, not this upload's.
        second = await _spawn_second(running, tmp_path, node_id="zweiter-knoten")
        try:
            await f.write(data[50_000:], 50_000)
            await f.close()
        finally:
            second.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.proc.wait(), 30)
    assert await running.documents() == [name]
    spools = sorted(p.name for p in (running.config.parent / "data" / "spool").iterdir())
    assert spools == sorted([load_config(running.config).server.node_id, "zweiter-knoten"])


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
        await running.put(MD_NW, f"/outbox/{FACILITY_NW}_w{i}.pdf", pdf_bytes(seed=bytes([i])))
    assert sorted(await running.documents()) == [f"{FACILITY_NW}_w{i}.pdf" for i in range(6)]
    running.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0


async def _sessions_per_process(run: Running, total: int) -> dict[int, int]:
    """Open SFTP login sessions per server process (``cluster status``), once they
    add up to ``total`` (each login's row is written just after it completes)."""
    db = Database(load_config(run.config).database)
    try:
        for _ in range(200):
            nodes = await cluster_status(db, SystemClock().now())
            counts = {n.pid: n.sessions.get("sftp", 0) for n in nodes if n.alive}
            if len(nodes) == 2 and sum(counts.values()) == total:
                return counts
            await asyncio.sleep(0.05)
        raise AssertionError(f"sessions per process never added up to {total}: {counts}")
    finally:
        await db.dispose()


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_sftp_connections_are_spread_evenly_over_two_workers_and_drained_on_sigterm(
    running: Running,
) -> None:
    await _sessions_per_process(running, 0)  # both processes serve
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(8):
            conn = await stack.enter_async_context(running.connect(LV_NW))
            await stack.enter_async_context(conn.start_sftp_client())
        # The kernel's hash would put 6 or more of 8 on one process in 29 % of tries.
        assert sorted((await _sessions_per_process(running, 8)).values()) == [4, 4]
        running.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.proc.wait(), 30) == 0


def _exited(pid: int) -> bool:
    """True once the process has exited (a zombie of its parent counts as exited)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


async def _gone(pid: int) -> None:
    """Until the process has exited."""
    for _ in range(200):
        if _exited(pid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"process {pid} still runs")


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_connections_go_to_the_first_process_once_the_other_worker_died(
    running: Running,
) -> None:
    await _sessions_per_process(running, 0)
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(4):
            await stack.enter_async_context(running.connect(LV_NW))
        counts = await _sessions_per_process(running, 4)
        assert sorted(counts.values()) == [2, 2]
        (worker,) = set(counts) - {running.proc.pid}
        os.kill(worker, signal.SIGKILL)
        await _gone(worker)
        for i in range(4):
            await running.put(MD_NW, f"/outbox/{FACILITY_NW}_d{i}.pdf", pdf_bytes(seed=bytes([i])))
        assert len(await running.documents()) == 4
    running.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running.proc.wait(), 30) == 0


async def _spawn_second(run: Running, tmp_path: Path, node_id: str | None = None) -> Running:
    """A second `serve` process on the same database and data folder, another port;
    with node_id, another node (else the same node started again)."""
    port = free_port()
    config = tmp_path / "second.toml"
    node = f'node_id = "{node_id}"\n' if node_id else ""
    text = run.config.read_text().replace(f"port = {run.port}\n", f"port = {port}\n{node}", 1)
    config.write_text(text)
    second = Running(await serve_process(config), port, config)
    second.keys = run.keys
    await wait_listening(second)
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


def _other_instance(root: Path, database: DatabaseSettings, port: int, server_extra: str) -> Path:
    """An initialised instance of its own (config, data folder, database) on ``port``."""
    root.mkdir()
    config = write_config(root, database)
    text = config.read_text().replace("port = 0\n", f"port = {port}\n{server_extra}", 1)
    config.write_text(text)
    Instance(root, config).ok("init")
    return config


async def _serve_elsewhere(
    run: Running, root: Path, database: DatabaseSettings, server_extra: str = ""
) -> tuple[int, str]:
    """A second instance on the port of ``run``: its exit status and stderr, or a
    failure when it is still running after 30 s."""
    config = _other_instance(root, database, run.port, server_extra)
    proc = await serve_process(config, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        await kill_group(proc)
        raise AssertionError("the second instance is serving on the same port") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def _other_database(tmp_path: Path, database: DatabaseSettings) -> DatabaseSettings:
    """Another database: a file of its own on SQLite (PostgreSQL: the test's schema)."""
    if database.url.startswith("sqlite"):
        return database.model_copy(update={"url": f"sqlite+aiosqlite:///{tmp_path}/other.db"})
    return database


@pytest.mark.parametrize("running", [""], indirect=True)
async def test_a_second_serve_on_a_taken_port_stops_with_one_line_naming_the_address(
    running: Running, tmp_path: Path, database_settings: DatabaseSettings
) -> None:
    code, err = await _serve_elsewhere(
        running, tmp_path / "other", _other_database(tmp_path, database_settings)
    )
    assert code == 1
    assert err == f"Error: 127.0.0.1:{running.port} ist bereits belegt (Address already in use)\n"
    async with running.connect(LV_NW) as conn:  # the first one goes on
        assert conn is not None


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_a_second_instance_with_workers_cannot_share_the_port_of_a_running_one(
    running: Running, tmp_path: Path, database_settings: DatabaseSettings
) -> None:
    code, err = await _serve_elsewhere(
        running,
        tmp_path / "other",
        _other_database(tmp_path, database_settings),
        "workers = 2\n",
    )
    assert (code, err.count("\n")) == (1, 1), err
    assert f"127.0.0.1:{running.port} ist bereits belegt" in err
    # Every login still reaches the first instance and its database.
    for i in range(6):
        await running.put(MD_NW, f"/outbox/{FACILITY_NW}_s{i}.pdf", pdf_bytes(seed=bytes([i])))
    assert sorted(await running.documents()) == [f"{FACILITY_NW}_s{i}.pdf" for i in range(6)]
