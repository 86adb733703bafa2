"""Who is logged in where: nodes with a heartbeat, and the login sessions on them.

Every ``serve`` process is a node: a row in ``nodes`` written when it starts, its
``heartbeat_at`` renewed every ``HEARTBEAT_SECONDS``, the row removed when it stops.
Every logged-in connection is a row in ``login_sessions`` on its node, written at
login and removed at close. So a session limit (``accounts.max_sessions``) holds
across the worker processes of one machine and across machines sharing a database.

A process that dies without stopping leaves its rows behind. They count only while
the node's heartbeat is younger than ``LEASE_SECONDS``; after that they are ignored,
and the next heartbeat of any live node deletes the dead node with its sessions.
``cluster_status`` lists the nodes for operators. SQLite serves one node only (its
worker processes share the node's name and host): a second one is refused at start.

A login writes one row and a close deletes it. On SQLite both run on the event loop
through ``Database.write_now`` (tens of microseconds, no hop to a thread); only when
another writer holds the lock do they go the usual way.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import Channel
from qprserver.clock import Clock
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account, LoginSession, Node
from qprserver.errors import StartupError
from qprserver.observability import events

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# Six missed heartbeats: long enough for a busy database, short enough that a
# crashed node's sessions stop blocking logins within half a minute.
LEASE_SECONDS = 30.0
LEASE = timedelta(seconds=LEASE_SECONDS)

# Built once: logins of accounts with a session limit run them.
_OPEN_SESSIONS = (
    select(func.count(LoginSession.id))
    .join(Node, LoginSession.node_id == Node.id)
    .where(LoginSession.account_id == bindparam("account"), Node.heartbeat_at > bindparam("since"))
)
# Sessions on the other nodes: this node counts its own in memory (``NodeLease``).
_OPEN_ELSEWHERE = _OPEN_SESSIONS.where(LoginSession.node_id != bindparam("node"))
_LOCK_ACCOUNT = select(Account.id).where(Account.id == bindparam("account")).with_for_update()
_INSERT_SESSION = insert(LoginSession).returning(LoginSession.id)
_DELETE_SESSION = delete(LoginSession).where(LoginSession.id == bindparam("session_id"))


async def count_open(reads: Reads, account_id: int, now: datetime) -> int:
    """Sessions of the account on live nodes (one indexed read)."""
    result = await reads.execute(_OPEN_SESSIONS, {"account": account_id, "since": now - LEASE})
    return int(result.scalar_one())


class NodeLease:
    """This process's row in ``nodes``: join, heartbeat, leave; and its sessions.

    The node also counts its own sessions in memory, from the moment a login
    completes (``reserve``), not from when its row is committed: a client that logs
    in again right after its first login completed must meet the limit even when
    the first row is still on its way to the database.
    """

    def __init__(self, db: Database, clock: Clock, name: str = "") -> None:
        self.db = db
        self.clock = clock
        self.name = name
        self.id: int | None = None
        self._users = 0
        self._local: Counter[int] = Counter()
        # The channel of each session row this node wrote (``qpr_sessions_active``).
        self._channels: dict[int, str] = {}

    async def count_open(self, reads: Reads, account_id: int, now: datetime) -> int:
        """The account's sessions: this node's (in memory) and other live nodes'."""
        elsewhere = await reads.execute(
            _OPEN_ELSEWHERE, {"account": account_id, "since": now - LEASE, "node": self.id or 0}
        )
        return int(elsewhere.scalar_one()) + self._local[account_id]

    def reserve(self, account_id: int) -> None:
        """Count a completed login on this node at once (``open_session`` follows)."""
        self._local[account_id] += 1

    def release(self, account_id: int) -> None:
        """Stop counting a login reserved on this node (refused or closed)."""
        self._local[account_id] -= 1
        if self._local[account_id] <= 0:
            del self._local[account_id]

    async def join(self) -> int:
        """Register this process as a node (once; each channel that serves calls it)."""
        self._users += 1
        if self.id is not None:
            return self.id
        now = self.clock.now()
        host = socket.gethostname()
        async with self.db.session() as session:
            if self.db.dialect == "sqlite":
                await _refuse_second_node(session, self.name, host, now)
            node = Node(
                name=self.name, host=host, pid=os.getpid(), started_at=now, heartbeat_at=now
            )
            session.add(node)
            await session.flush()
            self.id = node.id
        await self.beat()
        return self.id

    async def beat(self) -> int:
        """Renew this node's lease and remove dead nodes with their sessions; returns
        how many dead nodes went."""
        if self.id is None:
            return 0
        now = self.clock.now()
        async with self.db.session() as session:
            await session.execute(update(Node).where(Node.id == self.id).values(heartbeat_at=now))
            stale = select(Node.id).where(Node.heartbeat_at <= now - LEASE)
            await session.execute(delete(LoginSession).where(LoginSession.node_id.in_(stale)))
            gone = await session.execute(delete(Node).where(Node.heartbeat_at <= now - LEASE))
        dead = int(getattr(gone, "rowcount", 0) or 0)
        if dead:
            log.info("removed %d node(s) without a heartbeat for %.0f s", dead, LEASE_SECONDS)
        return dead

    async def leave(self) -> None:
        """Remove this node and its sessions (when the last channel stops)."""
        self._users = max(0, self._users - 1)
        if self._users or self.id is None:
            return
        node_id, self.id = self.id, None
        async with self.db.session() as session:
            await session.execute(delete(LoginSession).where(LoginSession.node_id == node_id))
            await session.execute(delete(Node).where(Node.id == node_id))
        for session_id in list(self._channels):
            self._closed(session_id)

    async def open_session(
        self, account_id: int, limit: int | None, channel: Channel, address: str
    ) -> int | None:
        """Record a login reserved with ``reserve``; None (nothing written) when the
        account's ``limit`` of open sessions is reached already, counting this node's
        other reservations and the other nodes' rows.

        Checking and writing happen in one transaction that holds the account's row
        (SQLite: the database's write lock), so two logins at once on two nodes
        cannot both take the last free session.
        """
        if self.id is None:
            raise RuntimeError("open_session before join")
        now = self.clock.now()
        here = max(0, self._local[account_id] - 1)  # this node's other logins of it
        values = {
            "account_id": account_id,
            "node_id": self.id,
            "channel": channel,
            "address": address,
            "started_at": now,
        }
        counted = {"account": account_id, "since": now - LEASE, "node": self.id}
        opened: list[int | None] = []

        def work(conn: Connection) -> None:
            if (
                limit is not None
                and conn.execute(_OPEN_ELSEWHERE, counted).scalar_one() + here >= limit
            ):
                opened.append(None)
                return
            opened.append(conn.execute(_INSERT_SESSION, values).scalar_one())

        if self.db.write_now(work):
            return self._opened(opened[0], channel)
        async with self.db.session() as session:
            if limit is not None:
                await session.execute(_LOCK_ACCOUNT, {"account": account_id})
                if (await session.execute(_OPEN_ELSEWHERE, counted)).scalar_one() + here >= limit:
                    return None
            session_id = int((await session.execute(_INSERT_SESSION, values)).scalar_one())
        return self._opened(session_id, channel)

    def _opened(self, session_id: int | None, channel: Channel) -> int | None:
        if session_id is not None:
            self._channels[session_id] = channel
            events.session_opened(channel)
        return session_id

    def _closed(self, session_id: int) -> None:
        channel = self._channels.pop(session_id, None)
        if channel is not None:
            events.session_closed(channel)

    def close_session_now(self, session_id: int) -> bool:
        """Remove a session's row right here (SQLite); False when it must be done by
        ``close_session`` instead."""

        def work(conn: Connection) -> None:
            conn.execute(_DELETE_SESSION, {"session_id": session_id})

        if not self.db.write_now(work):
            return False
        self._closed(session_id)
        return True

    async def close_session(self, session_id: int) -> None:
        """Remove a session's row (at close)."""
        if self.close_session_now(session_id):
            return
        async with self.db.session() as session:
            await session.execute(_DELETE_SESSION, {"session_id": session_id})
        self._closed(session_id)


async def _refuse_second_node(session: AsyncSession, name: str, host: str, now: datetime) -> None:
    """StartupError when another live node (not a worker of this one) serves the database."""
    other = await session.execute(
        select(Node.name, Node.host)
        .where(Node.heartbeat_at > now - LEASE, or_(Node.name != name, Node.host != host))
        .limit(1)
    )
    found = other.first()
    if found is not None:
        raise StartupError(
            f"Die SQLite-Datenbank bedient schon der Knoten {found.name or '?'} auf "
            f"{found.host}; mehrere Knoten brauchen PostgreSQL (database.url)"
        )


@dataclass(frozen=True)
class NodeStatus:
    """A node as ``cluster status`` shows it."""

    id: int
    name: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool
    sessions: dict[str, int]


async def cluster_status(db: Database, now: datetime) -> list[NodeStatus]:
    """Every node row with its liveness and its open sessions per channel."""
    async with db.read_session() as session:
        nodes = (await session.scalars(select(Node).order_by(Node.name, Node.id))).all()
        counts = (
            await session.execute(
                select(LoginSession.node_id, LoginSession.channel, func.count()).group_by(
                    LoginSession.node_id, LoginSession.channel
                )
            )
        ).all()
    per_node: dict[int, dict[str, int]] = {}
    for node_id, channel, count in counts:
        per_node.setdefault(node_id, {})[str(channel)] = int(count)
    return [
        NodeStatus(
            id=node.id,
            name=node.name,
            host=node.host,
            pid=node.pid,
            started_at=node.started_at,
            heartbeat_at=node.heartbeat_at,
            alive=node.heartbeat_at > now - LEASE,
            sessions=per_node.get(node.id, {}),
        )
        for node in nodes
    ]
