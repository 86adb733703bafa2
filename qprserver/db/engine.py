"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from qprserver.config import DatabaseSettings
from qprserver.db.reads import AsyncReads, DriverFailed, SyncReads
from qprserver.db.reads import Reads as Reads  # where the hot-path readers import it from

T = TypeVar("T")
P = TypeVar("P")

AUDIT_KEY_INFO = "audit_key"  # ``info`` entry of write sessions (``audit``)

log = logging.getLogger(__name__)

# One try at SQLite's write lock waits this long inside SQLite (its busy handler)
# before the next try; between tries a waiting write says so in the log.
BUSY_ATTEMPT_SECONDS = 5.0

# Set while a task holds a write session on SQLite: a second one in the same task
# would wait for itself.
_holding_write: ContextVar[bool] = ContextVar("qpr_holding_write", default=False)


# SQLite's primary result codes for "another connection holds the lock"; the driver
# reports extended codes (SQLITE_BUSY_SNAPSHOT, ...), whose low byte is the primary one.
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_sqlite_busy(exc: DBAPIError) -> bool:
    """True when SQLite refused for a lock another connection holds (SQLITE_BUSY or
    SQLITE_LOCKED), read from the driver's error code, not its message."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _SQLITE_BUSY_CODES


def _sqlite_engine(url: str, echo: bool, *, immediate: bool, write_wait: float) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": BUSY_ATTEMPT_SECONDS})
    _sqlite_events(engine.sync_engine, immediate=immediate, write_wait=write_wait)
    return engine


def _sqlite_sync_writer(url: str, echo: bool, *, write_wait: float) -> Engine:
    """A synchronous engine on the same SQLite file for ``Database.write``: its
    transactions run whole in a worker thread and begin as the async writers do."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    engine = create_engine(
        sync_url,
        echo=echo,
        # Used from the worker threads of ``asyncio.to_thread``, one at a time.
        connect_args={"timeout": BUSY_ATTEMPT_SECONDS, "check_same_thread": False},
    )
    _sqlite_events(engine, immediate=True, write_wait=write_wait)
    return engine


def _sqlite_events(engine: Engine, *, immediate: bool, write_wait: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN can be IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it returns (NORMAL would let a power loss
        # take back a document whose upload the client was told had succeeded).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_ATTEMPT_SECONDS * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY without
        # waiting; writers take the lock up front instead, readers stay concurrent.
        if not immediate:
            conn.exec_driver_sql("BEGIN")
            return
        # Only this statement can meet another process's write lock: once it succeeds
        # the transaction holds the lock to its end. So it alone is tried again, for as
        # long as ``database.write_wait`` allows, and a busy database never fails a
        # client's write after one busy wait. (It runs in aiosqlite's thread or in
        # ``Database.write``'s: the event loop goes on meanwhile.)
        deadline = time.monotonic() + write_wait
        attempt = 1
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if not is_sqlite_busy(exc) or time.monotonic() >= deadline:
                    raise
            log.warning(
                "database write lock held by another process for %.0f s; still waiting",
                attempt * BUSY_ATTEMPT_SECONDS,
            )
            attempt += 1


def _sqlite_quick_engine(url: str, *, write: bool = False) -> Engine:
    """A synchronous engine on the same SQLite file (``quick_read``, ``write_now``)."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    # A reader in WAL mode waits for no writer; the short timeout only bounds the rare
    # wait (e.g. a crashed writer's recovery), after which the caller retries off-loop.
    engine = create_engine(sync_url, connect_args={"timeout": 0.2, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit: each read sees the newest commit
        cursor = dbapi_connection.cursor()
        if write:
            cursor.execute("PRAGMA foreign_keys=ON")
            # Receipt and login batches, gathered for seconds in memory anyway
            # (``sftp/receipts.py``): no fsync on the event loop; the next FULL
            # commit of any writer syncs the shared log with them.
            cursor.execute("PRAGMA synchronous=NORMAL")
            # The writer waits at most this long for another's write lock, then the
            # caller writes the usual way instead of holding up the event loop.
            cursor.execute("PRAGMA busy_timeout=20")
        else:
            cursor.execute("PRAGMA query_only=ON")
            cursor.execute("PRAGMA busy_timeout=200")
        cursor.close()

    return engine


class Database:
    """The engines of one database and the sessions made from them.

    ``session()`` is for work that writes; ``read_session()`` for reads only. On
    PostgreSQL both share one engine; on SQLite writers begin IMMEDIATE.
    """

    def __init__(self, settings: DatabaseSettings, *, audit_key: bytes | None = None) -> None:
        self.settings = settings
        # Every session and write connection carries it to the audit chain's appends.
        self.audit_key = audit_key
        self.url = settings.url
        self.dialect = make_url(settings.url).get_backend_name()
        if self.dialect == "sqlite":
            self._ensure_sqlite_folder()
            wait = settings.write_wait
            self.engine = _sqlite_engine(
                settings.url, settings.echo, immediate=True, write_wait=wait
            )
            self.read_engine = _sqlite_engine(
                settings.url, settings.echo, immediate=False, write_wait=wait
            )
            # SQLite has one write lock per file. Left to SQLite's busy handler, the
            # writers of one process poll for it with growing sleeps and no order, and
            # under load one of them can lose every round until its wait runs out.
            # Queued here instead, they take turns in arrival order and only one of
            # them at a time ever waits inside SQLite (for another process).
            self._write_turn: asyncio.Lock | None = asyncio.Lock()
            self._quick: Engine | None = _sqlite_quick_engine(settings.url)
            self._quick_writer: Engine | None = _sqlite_quick_engine(settings.url, write=True)
            self._sync_writer: Engine | None = _sqlite_sync_writer(
                settings.url, settings.echo, write_wait=wait
            )
            self._quick_async: AsyncEngine | None = None
        else:
            connect_args: dict[str, Any] = {}
            if settings.schema_name:
                connect_args["server_settings"] = {"search_path": settings.schema_name}
            self.engine = create_async_engine(
                settings.url, echo=settings.echo, connect_args=connect_args, pool_pre_ping=True
            )
            self.read_engine = self.engine
            self._quick = None
            self._quick_writer = None
            self._sync_writer = None
            # PostgreSQL locks rows, not the database, and waits without a timeout.
            self._write_turn = None
            # Quick reads: autocommit (no BEGIN/ROLLBACK round trips) and no ping per
            # checkout; a connection found broken sends the read the usual way.
            self._quick_async = create_async_engine(
                settings.url,
                echo=settings.echo,
                connect_args=connect_args,
                isolation_level="AUTOCOMMIT",
            )
        self._quick_conn: Connection | None = None
        info = {AUDIT_KEY_INFO: audit_key} if audit_key is not None else {}
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def _ensure_sqlite_folder(self) -> None:
        database = make_url(self.url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error.

        On SQLite the write sessions of this process take turns (first come, first
        served) and each holds the database's write lock from its start to its end.
        """
        if self._write_turn is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        if _holding_write.get():
            raise RuntimeError("a write session inside another one would wait for itself")
        async with self._write_turn:
            token = _holding_write.set(True)
            try:
                async with self._sessions() as session, session.begin():
                    await session.connection()  # BEGIN IMMEDIATE now, during our turn
                    yield session
            finally:
                _holding_write.reset(token)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in one write transaction, committed when it returns, rolled
        back when it raises: a synchronous function on a synchronous connection.

        For a transaction of many short statements on the path a client waits on (an
        upload's acceptance). Through ``session()`` on SQLite every statement is a
        round trip to aiosqlite's thread and back, dozens per transaction; here the
        whole transaction is one trip to a worker thread, on a connection of its own
        that begins, waits and takes its turn as ``session()``'s do. On PostgreSQL it
        runs on a pooled connection (``AsyncConnection.run_sync``): one round trip to
        the server per statement either way. No ORM session: ``work`` writes with
        Core statements (the audit key is ``audit_key``).
        """
        if self._sync_writer is None:
            async with self.engine.begin() as conn:
                return await conn.run_sync(work)
        return await self._in_turn(lambda: self._write_here(work))

    async def _in_turn(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread during this process's write turn (SQLite)."""
        if _holding_write.get():
            raise RuntimeError("a write session inside another one would wait for itself")
        assert self._write_turn is not None
        async with self._write_turn:
            token = _holding_write.set(True)
            try:
                done = asyncio.ensure_future(asyncio.to_thread(call))
                try:
                    return await asyncio.shield(done)
                except asyncio.CancelledError:
                    # The thread goes on to its commit or rollback: the turn is this
                    # transaction's until then, whoever stopped waiting for it.
                    await asyncio.wait([done])
                    raise
            finally:
                _holding_write.reset(token)

    def _write_here(self, work: Callable[[Connection], T]) -> T:
        assert self._sync_writer is not None
        with self._sync_writer.begin() as conn:
            return work(conn)

    async def write_after(self, prepare: Callable[[], P], work: Callable[[Connection, P], T]) -> T:
        """``prepare()`` (blocking, e.g. the fsync of an upload's bytes), then
        ``work(conn, prepared)`` as ``write`` runs it; the transaction begins only
        once ``prepare`` has returned, and not at all when it raises.

        On SQLite, when no other write of this process holds or waits for the turn,
        both run in one trip to a worker thread (an upload's close waits on one hop
        fewer); otherwise ``prepare`` runs in a thread of its own first, so that it
        does not hold up the writers queued before it. On PostgreSQL ``prepare`` runs
        in a thread, then ``write``.
        """
        if self._write_turn is None or self._write_turn.locked():
            prepared = await asyncio.to_thread(prepare)
            return await self.write(lambda conn: work(conn, prepared))

        def prepare_then_write() -> T:
            prepared = prepare()
            return self._write_here(lambda conn: work(conn, prepared))

        return await self._in_turn(prepare_then_write)

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; closing it ends its transaction without a commit."""
        async with self._read_sessions() as session:
            yield session

    @property
    def reads_on_loop(self) -> bool:
        """True when ``quick_read`` reads on the event loop itself (SQLite): it then
        never needs a task of its own (``sftp.inline`` serves requests in a callback)."""
        return self._quick is not None

    async def quick_read(self, work: Callable[[Reads], Awaitable[T]]) -> T:
        """``await work(reader)`` for the per-request reads of the SFTP edge (stat, open,
        list, login); ``work`` only reads.

        On SQLite the reads run right here on the event loop, through a synchronous
        read-only connection: an indexed read of a local file takes tens of
        microseconds, a hop to aiosqlite's thread and back about a millisecond, and
        an ``mget`` of thousands of files makes several reads per file. Should the file
        be locked past 200 ms, ``work`` runs again the usual way. On PostgreSQL the
        reads go over a pooled autocommit connection: one round trip per statement.
        """
        if self._quick is not None:
            if self._quick_conn is None:
                # One connection for the process: work runs to its end without yielding
                # to the loop, so no two quick reads ever share it at once.
                self._quick_conn = self._quick.connect()
            reads = SyncReads(self._quick_conn)
            try:
                return await work(reads)
            except OperationalError as exc:
                self._drop_quick_conn()
                if not is_sqlite_busy(exc):
                    raise
            finally:
                if self._quick_conn is not None:
                    reads.close()
        elif self._quick_async is not None:
            try:
                async with self._quick_async.connect() as conn:
                    async_reads = AsyncReads(conn)
                    try:
                        return await work(async_reads)
                    finally:
                        await async_reads.close()
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            except DriverFailed:
                pass  # the connection is dropped; the read goes the usual way
        async with self.read_session() as session:
            return await work(session)

    def write_now(self, work: Callable[[Connection], None]) -> bool:
        """SQLite: ``work(conn)`` in one ``BEGIN IMMEDIATE`` transaction, right here on
        the event loop. False (nothing written) on PostgreSQL, or when another writer
        holds the lock past 20 ms: the caller then writes the usual way.

        For short batches the server writes beside its sessions (download receipts):
        handed to aiosqlite's thread instead, each batch cost the loop's thread far
        more than the write itself (measured: 1.6 ms of it per receipt in a bulk
        ``mget``, against 0.04 ms for the same rows written here).
        """
        if self._quick_writer is None:
            return False
        if self._write_turn is not None and self._write_turn.locked():
            # A session of this process holds the write lock and needs the event loop
            # to finish: waiting for it here would only stall both.
            return False
        with self._quick_writer.connect() as conn:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except OperationalError as exc:
                if is_sqlite_busy(exc):
                    return False
                raise
            try:
                work(conn)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
            return True

    def _drop_quick_conn(self) -> None:
        conn, self._quick_conn = self._quick_conn, None
        if conn is not None:
            conn.invalidate()
            conn.close()

    async def dispose(self) -> None:
        if self._quick is not None:
            self._drop_quick_conn()
            self._quick.dispose()
        if self._quick_writer is not None:
            self._quick_writer.dispose()
        if self._sync_writer is not None:
            self._sync_writer.dispose()
        if self._quick_async is not None:
            await self._quick_async.dispose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
