"""sd_notify over a real datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from qprserver.config import ServiceEnvironment
from qprserver.observability.systemd import ServiceManager


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def test_ready_status_and_stopping_reach_the_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    manager = ServiceManager(ServiceEnvironment(notify_socket=path))
    assert manager.enabled
    assert manager.notify(ready=1, status="listening on port 2222")
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening on port 2222"
    assert manager.notify(stopping=1)
    assert sock.recv(4096) == b"STOPPING=1"


def test_an_abstract_socket_name_is_reached_too() -> None:
    name = f"qprserver-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert ServiceManager(ServiceEnvironment(notify_socket="@" + name)).notify(ready=1)
        assert sock.recv(4096) == b"READY=1"


def test_without_a_notify_socket_nothing_is_sent() -> None:
    manager = ServiceManager(ServiceEnvironment())
    assert not manager.enabled
    assert not manager.notify(ready=1)


def test_a_gone_socket_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = ServiceManager(ServiceEnvironment(notify_socket=str(tmp_path / "gone")))
    assert not manager.notify(ready=1)
    assert "telling systemd READY=1 failed" in caplog.text


async def test_the_watchdog_pings_at_half_its_interval_with_a_fresh_status(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    # WatchdogSec=0.2 s: a ping at least every 0.1 s.
    manager = ServiceManager(ServiceEnvironment(notify_socket=path, watchdog_usec=200_000))
    calls = 0

    async def status() -> str:
        nonlocal calls
        calls += 1
        return f"{calls} session(s), 0 mail(s) queued"

    task = asyncio.create_task(manager.watchdog(status))
    loop = asyncio.get_running_loop()
    try:
        got = [await asyncio.wait_for(loop.sock_recv(sock, 4096), 5) for _ in range(4)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert got == [
        b"WATCHDOG=1",
        b"STATUS=1 session(s), 0 mail(s) queued",
        b"WATCHDOG=1",
        b"STATUS=2 session(s), 0 mail(s) queued",
    ]
