"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from qprserver.config import DatabaseSettings

T = TypeVar("T")


def _sqlite_engine(url: str, echo: bool, *, immediate: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN can be IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail with SQLITE_BUSY without
        # waiting; writers take the lock up front instead, readers stay concurrent.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _sqlite_quick_engine(url: str) -> Engine:
    """A synchronous, read-only engine on the same SQLite file (see ``quick_read``)."""
    sync_url = make_url(url).set(drivername="sqlite+pysqlite")
    # A reader in WAL mode waits for no writer; the short timeout only bounds the rare
    # wait (e.g. a crashed writer's recovery), after which the caller retries off-loop.
    engine = create_engine(sync_url, connect_args={"timeout": 0.2, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit: each read sees the newest commit
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute("PRAGMA busy_timeout=200")
        cursor.close()

    return engine


class Reads(Protocol):
    """What hot-path readers call: an ``AsyncSession`` or ``quick_read``'s reader."""

    async def execute(self, statement: Any, params: Any = None, /) -> Any: ...

    async def scalars(self, statement: Any, params: Any = None, /) -> Any: ...

    async def scalar(self, statement: Any, params: Any = None, /) -> Any: ...


class _SyncReads:
    """A synchronous connection behind the async read methods (SQLite quick reads).

    Column selects run on the connection itself; an ORM session, which costs more,
    is made on the same connection only for selects of whole entities.
    """

    __slots__ = ("_conn", "_session")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._session: Session | None = None

    def _orm(self) -> Session:
        if self._session is None:
            self._session = Session(bind=self._conn, expire_on_commit=False)
        return self._session

    async def execute(self, statement: Any, params: Any = None, /) -> Any:
        return self._conn.execute(statement, params)

    async def scalars(self, statement: Any, params: Any = None, /) -> Any:
        return self._orm().scalars(statement, params)

    async def scalar(self, statement: Any, params: Any = None, /) -> Any:
        return self._orm().scalar(statement, params)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        # Ends SQLAlchemy's transaction; the driver holds none (autocommit reads).
        self._conn.rollback()


class Database:
    """The engines of one database and the sessions made from them.

    ``session()`` is for work that writes; ``read_session()`` for reads only. On
    PostgreSQL both share one engine; on SQLite writers begin IMMEDIATE.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.url = settings.url
        self.dialect = make_url(settings.url).get_backend_name()
        if self.dialect == "sqlite":
            self._ensure_sqlite_folder()
            self.engine = _sqlite_engine(settings.url, settings.echo, immediate=True)
            self.read_engine = _sqlite_engine(settings.url, settings.echo, immediate=False)
            self._quick: Engine | None = _sqlite_quick_engine(settings.url)
        else:
            connect_args: dict[str, Any] = {}
            if settings.schema_name:
                connect_args["server_settings"] = {"search_path": settings.schema_name}
            self.engine = create_async_engine(
                settings.url, echo=settings.echo, connect_args=connect_args, pool_pre_ping=True
            )
            self.read_engine = self.engine
            self._quick = None
        self._quick_conn: Connection | None = None
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    def _ensure_sqlite_folder(self) -> None:
        database = make_url(self.url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction, committed on success, rolled back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read_session(self) -> AsyncIterator[AsyncSession]:
        """A session for reading; closing it ends its transaction without a commit."""
        async with self._read_sessions() as session:
            yield session

    async def quick_read(self, work: Callable[[Reads], Awaitable[T]]) -> T:
        """``await work(reader)`` for the per-request reads of the SFTP edge (stat, open,
        list, login); ``work`` only reads.

        On SQLite the reads run right here on the event loop, through a synchronous
        read-only connection: an indexed read of a local file takes tens of
        microseconds, a hop to aiosqlite's thread and back about a millisecond, and
        an ``mget`` of thousands of files makes several reads per file. Should the file
        be locked past 200 ms, ``work`` runs again the usual way. On PostgreSQL this is
        ``read_session()`` (asyncpg needs no thread).
        """
        if self._quick is not None:
            if self._quick_conn is None:
                # One connection for the process: work runs to its end without yielding
                # to the loop, so no two quick reads ever share it at once.
                self._quick_conn = self._quick.connect()
            reads = _SyncReads(self._quick_conn)
            try:
                return await work(reads)
            except OperationalError as exc:
                self._drop_quick_conn()
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            finally:
                if self._quick_conn is not None:
                    reads.close()
        async with self.read_session() as session:
            return await work(session)

    def _drop_quick_conn(self) -> None:
        conn, self._quick_conn = self._quick_conn, None
        if conn is not None:
            conn.invalidate()
            conn.close()

    async def dispose(self) -> None:
        if self._quick is not None:
            self._drop_quick_conn()
            self._quick.dispose()
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
