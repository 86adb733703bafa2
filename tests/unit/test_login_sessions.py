"""Login sessions counted in the database per node (``accounts/sessions.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from qprserver.accounts import service as accounts
from qprserver.accounts import sessions
from qprserver.accounts.enums import Channel
from qprserver.accounts.sessions import NodeLease
from qprserver.audit.chain import Actor
from qprserver.clock import FixedClock
from qprserver.config import MailSettings
from qprserver.db.engine import Database, Reads
from qprserver.db.models import LoginSession, Node
from qprserver.notify.outbox import Notifier

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CLI = Actor("cli", "test")
IK = "105830016"
# Mails are queued to the real outbox table and never sent here.
MAIL = Notifier(MailSettings())


async def _account_id(db: Database) -> int:
    async with db.session() as session:
        account = await accounts.add_account(
            session, CLI, NOW, ik=IK, name="AOK", email=None, roles=["recipient"], notifier=MAIL
        )
        return account.id


async def _open(db: Database, account_id: int, now: datetime) -> int:
    async def work(reads: Reads) -> int:
        return await sessions.count_open(reads, account_id, now)

    return await db.quick_read(work)


async def _rows(db: Database, model: type) -> int:
    async with db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_sessions_of_a_node_without_a_heartbeat_stop_counting_and_are_removed(
    db: Database,
) -> None:
    account_id = await _account_id(db)
    dead_clock, live_clock = FixedClock(NOW), FixedClock(NOW)
    dead, live = NodeLease(db, dead_clock), NodeLease(db, live_clock)
    await dead.join()
    await live.join()
    assert await dead.open_session(account_id, 1, Channel.SFTP, "192.0.2.1") is not None
    # The limit holds across nodes while the first one beats ...
    assert await live.open_session(account_id, 1, Channel.SFTP, "192.0.2.2") is None
    almost = NOW + sessions.LEASE - timedelta(seconds=1)
    assert await _open(db, account_id, almost) == 1
    # ... and its session stops counting once its lease ran out without a heartbeat.
    later = NOW + sessions.LEASE + timedelta(seconds=1)
    assert await _open(db, account_id, later) == 0
    live_clock.advance(sessions.LEASE + timedelta(seconds=1))
    assert await live.open_session(account_id, 1, Channel.SFTP, "192.0.2.2") is not None
    # The live node's next heartbeat removes the dead node and its session.
    assert await live.beat() == 1
    assert await _rows(db, Node) == 1
    assert await _rows(db, LoginSession) == 1


async def test_a_heartbeat_keeps_a_node_s_sessions_counting_past_the_first_lease(
    db: Database,
) -> None:
    account_id = await _account_id(db)
    clock = FixedClock(NOW)
    node = NodeLease(db, clock)
    await node.join()
    await node.open_session(account_id, None, Channel.SFTP, "192.0.2.1")
    for _ in range(10):
        clock.advance(timedelta(seconds=sessions.HEARTBEAT_SECONDS))
        await node.beat()
    assert clock.now() - NOW > sessions.LEASE
    assert await _open(db, account_id, clock.now()) == 1


async def test_leaving_removes_the_node_and_its_sessions(db: Database) -> None:
    account_id = await _account_id(db)
    node = NodeLease(db, FixedClock(NOW))
    await node.join()
    await node.join()  # a second channel of the same process
    await node.open_session(account_id, None, Channel.SFTP, "192.0.2.1")
    await node.leave()
    assert await _rows(db, LoginSession) == 1  # the other channel still serves
    await node.leave()
    assert (await _rows(db, Node), await _rows(db, LoginSession)) == (0, 0)
