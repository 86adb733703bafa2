"""Random SFTP operations by several accounts against a simple model of the mailbox.

A depositor uploads to two recipients (addressed directly), recipients download and
acknowledge, everyone lists. After every step each recipient's inbox must equal the
model exactly (names and bytes), and nothing of one recipient may ever appear to
the other. The server runs in an event loop of its own thread; hypothesis drives it
synchronously from the test.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from qprserver.db.engine import Database
from tests.functional.harness import LV_BY, LV_NW, MD_NW, Server, make_settings, start_server

T = TypeVar("T")
NAMES = ["a.pdf", "b.pdf", "c.pdf"]
RECIPIENTS = [LV_NW, LV_BY]


class LoopThread:
    """An event loop in a thread, so synchronous hypothesis rules can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Clients:
    """One open SFTP session per account, reused across steps."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conns: dict[str, Any] = {}
        self.sftp: dict[str, Any] = {}

    async def open(self) -> None:
        for ik in (MD_NW, *RECIPIENTS):
            conn = await self.server.connect(ik)
            self.conns[ik] = conn
            self.sftp[ik] = await conn.start_sftp_client()

    async def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
            await conn.wait_closed()


@pytest.fixture
def running(
    tmp_path: Path, database_settings: DatabaseSettings
) -> Iterator[tuple[LoopThread, Clients]]:
    loop = LoopThread()
    db = Database(database_settings)

    async def start() -> Clients:
        await migrate.upgrade(db)
        settings = make_settings(tmp_path, database_settings.url, database_settings.schema_name)
        server = await start_server(settings, db, tmp_path)
        await server.add_account(MD_NW, ["depositor"])
        for ik in RECIPIENTS:
            await server.add_account(ik, ["recipient"])
        clients = Clients(server)
        await clients.open()
        return clients

    clients = loop.run(start())
    try:
        yield loop, clients
    finally:

        async def stop() -> None:
            await clients.close()
            await clients.server.listener.stop(grace=0)
            await db.dispose()

        loop.run(stop())
        loop.close()


def test_random_operations_keep_every_mailbox_equal_to_the_model(
    running: tuple[LoopThread, Clients],
) -> None:
    loop, clients = running
    # Contents stay unique across examples: the same bytes under the same name again
    # would be "unchanged" (no new version), and the server outlives each example.
    serials = itertools.count(1)

    class Mailbox(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            # name -> (recipient, content) of the depositor's current version
            self.current: dict[str, tuple[str, bytes]] = {}
            self.inbox: dict[str, dict[str, bytes]] = {ik: {} for ik in RECIPIENTS}
            self.acked: dict[str, list[bytes]] = {ik: [] for ik in RECIPIENTS}
            loop.run(self._reset())

        async def _reset(self) -> None:
            # Each example starts from empty inboxes: acknowledge whatever is left.
            for ik in RECIPIENTS:
                sftp = clients.sftp[ik]
                for name in await sftp.listdir("/inbox"):
                    if name not in (".", ".."):
                        await sftp.remove(f"/inbox/{name}")

        @rule(name=st.sampled_from(NAMES), to=st.sampled_from(RECIPIENTS))
        def upload(self, name: str, to: str) -> None:
            target = to
            content = b"%PDF-1.7\n" + f"{name}-{target}-{next(serials)}".encode() + b"\n%%EOF\n"

            async def put() -> None:
                async with clients.sftp[MD_NW].open(f"/outbox/{target}/{name}", "wb") as f:
                    await f.write(content)

            loop.run(put())
            # A new version supersedes the depositor's earlier one wherever it lies.
            if name in self.current:
                earlier, _ = self.current[name]
                self.inbox[earlier].pop(name, None)
            self.current[name] = (target, content)
            self.inbox[target][name] = content

        @rule(who=st.sampled_from(RECIPIENTS), name=st.sampled_from(NAMES))
        def acknowledge(self, who: str, name: str) -> None:
            async def rm() -> bool:
                try:
                    await clients.sftp[who].remove(f"/inbox/{name}")
                except asyncssh.SFTPNoSuchFile:
                    return False
                return True

            removed = loop.run(rm())
            assert removed == (name in self.inbox[who])
            if removed:
                self.acked[who].append(self.inbox[who].pop(name))

        @rule(who=st.sampled_from(RECIPIENTS), name=st.sampled_from(NAMES))
        def read_someone_elses_name(self, who: str, name: str) -> None:
            async def get() -> bytes | None:
                try:
                    async with clients.sftp[who].open(f"/inbox/{name}", "rb") as f:
                        return bytes(await f.read())
                except asyncssh.SFTPNoSuchFile:
                    return None

            assert loop.run(get()) == self.inbox[who].get(name)

        @invariant()
        def every_inbox_matches_the_model(self) -> None:
            async def snapshot() -> dict[str, dict[str, bytes]]:
                result: dict[str, dict[str, bytes]] = {}
                for ik in RECIPIENTS:
                    sftp = clients.sftp[ik]
                    names = [n for n in await sftp.listdir("/inbox") if n not in (".", "..")]
                    result[ik] = {}
                    for n in names:
                        async with sftp.open(f"/inbox/{n}", "rb") as f:
                            result[ik][n] = bytes(await f.read())
                return result

            seen = loop.run(snapshot())
            assert seen == self.inbox
            mine = {c for c in seen[LV_NW].values()}
            theirs = {c for c in seen[LV_BY].values()}
            assert not mine & theirs  # nothing of one recipient shows to the other

        @invariant()
        def archives_hold_what_was_acknowledged(self) -> None:
            async def archived(ik: str) -> list[bytes]:
                sftp = clients.sftp[ik]
                out = []
                for n in await sftp.listdir("/archive"):
                    if n not in (".", ".."):
                        async with sftp.open(f"/archive/{n}", "rb") as f:
                            out.append(bytes(await f.read()))
                return out

            for ik in RECIPIENTS:
                assert set(self.acked[ik]) <= set(loop.run(archived(ik)))

    Mailbox.TestCase.settings = settings(
        max_examples=12,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    Mailbox.TestCase().runTest()
