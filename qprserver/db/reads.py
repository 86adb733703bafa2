"""The readers ``Database.quick_read`` hands its work: SQLite's synchronous connection
and PostgreSQL's autocommit connection behind the same async read methods, each
also able to run a ``Prepared`` select through its driver (``prepared``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from qprserver.db.prepared import Prepared


class Reads(Protocol):
    """What hot-path readers call: an ``AsyncSession`` or ``quick_read``'s reader."""

    async def execute(self, statement: Any, params: Any = None, /) -> Any: ...

    async def scalars(self, statement: Any, params: Any = None, /) -> Any: ...

    async def scalar(self, statement: Any, params: Any = None, /) -> Any: ...


class SyncReads:
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

    async def prepared_rows(
        self, prepared: Prepared, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of a prepared select, asked of the SQLite driver directly (``prepared``)."""
        compiled = prepared.compiled(self._conn.dialect)
        args = compiled.args(params)
        driver = self._conn.connection.dbapi_connection
        assert driver is not None
        try:
            found = driver.execute(compiled.sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            # As SQLAlchemy would raise it: ``quick_read`` tells a lock from other errors.
            raise OperationalError(compiled.sql, args, exc) from exc
        return compiled.process(found)

    async def scalars(self, statement: Any, params: Any = None, /) -> Any:
        return self._orm().scalars(statement, params)

    async def scalar(self, statement: Any, params: Any = None, /) -> Any:
        return self._orm().scalar(statement, params)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        # Ends SQLAlchemy's transaction; the driver holds none (autocommit reads).
        self._conn.rollback()


class DriverFailed(Exception):
    """A prepared select failed in the driver (PostgreSQL); ``quick_read`` retries it."""


class AsyncReads:
    """An autocommit connection behind the read methods (PostgreSQL quick reads).

    Column selects go to the connection: through an ORM session on it, an ``mget``
    over PostgreSQL took 2.35× OpenSSH's time instead of 1.68× (QUICK, 5 runs).
    """

    __slots__ = ("_conn", "_session")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._session: AsyncSession | None = None

    def _orm(self) -> AsyncSession:
        if self._session is None:
            self._session = AsyncSession(bind=self._conn, expire_on_commit=False)
        return self._session

    async def execute(self, statement: Any, params: Any = None, /) -> Any:
        return await self._conn.execute(statement, params)

    async def prepared_rows(
        self, prepared: Prepared, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """The rows of a prepared select, asked of asyncpg directly (``prepared``): one
        round trip to a statement the connection has prepared already."""
        compiled = prepared.compiled(self._conn.dialect)
        driver = (await self._conn.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            found = await driver.fetch(compiled.sql, *compiled.args(params))
        except Exception:
            # Whatever the driver met (a broken connection, an error in the query): the
            # connection is not reused, and the select runs the usual way, which
            # reports it as SQLAlchemy does.
            await self._conn.invalidate()
            raise DriverFailed from None
        return compiled.process(found)

    async def scalars(self, statement: Any, params: Any = None, /) -> Any:
        return await self._orm().scalars(statement, params)

    async def scalar(self, statement: Any, params: Any = None, /) -> Any:
        return await self._orm().scalar(statement, params)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
