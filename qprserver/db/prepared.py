"""Hot-path selects run by the driver itself, without SQLAlchemy's execution path.

The SFTP edge looks up a file for every ``stat`` and ``open``; the query takes about
10 µs on SQLite, but SQLAlchemy Core around it (compiled-cache lookup, execution
context, result object, row processing) several times that. A ``Prepared`` select
is compiled once per dialect into the driver's own SQL; ``rows`` then hands that
string and the parameters in order straight to the driver (SQLite's statement
cache and asyncpg's prepared statements skip the parse) and applies the column
types' result processing itself, so the rows are the same as through SQLAlchemy.
Nothing is cached but the compiled statement: every call reads the database anew,
so it can never serve a stale row.

Readers without a driver path (an ``AsyncSession``, the fallback of ``quick_read``)
run the same select the usual way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Select
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None


class Compiled:
    """A select compiled for one dialect: the SQL, its parameters in order, processors."""

    __slots__ = ("_any_bind", "_binds", "_defaults", "_names", "_results", "_width", "sql")

    def __init__(self, statement: Select[*tuple[Any, ...]], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.positiontup is None:
            raise ValueError(f"{dialect.name}: the driver's parameters are not positional")
        self.sql = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup)
        binds = compiled.binds
        # Literal values of the statement (e.g. LIMIT 1) as bound parameters.
        self._defaults = {key: b.effective_value for key, b in binds.items() if not b.required}
        self._binds: tuple[Processor, ...] = tuple(
            binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self._names
        )
        self._any_bind = any(process is not None for process in self._binds)
        results = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]
        self._width = len(results)
        # Only the columns that have processing: the others are taken as they come.
        self._results: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (index, process) for index, process in enumerate(results) if process is not None
        )

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments for these named parameters."""
        defaults = self._defaults
        values = [params[name] if name in params else defaults[name] for name in self._names]
        if not self._any_bind:
            return values
        return [
            value if process is None else process(value)
            for value, process in zip(values, self._binds, strict=True)
        ]

    def process(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """The driver's rows with each column's result processing applied."""
        results = self._results
        if not results:
            return [tuple(row) for row in rows]
        processed = []
        for row in rows:
            if len(row) != self._width:
                raise ValueError(f"{len(row)} columns, not {self._width}")
            values = list(row)
            for index, process in results:
                value = values[index]
                if value is not None:
                    values[index] = process(value)
            processed.append(tuple(values))
        return processed


class Prepared:
    """A select to run through the driver; compiled on first use for each dialect."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._compiled: dict[str, Compiled] = {}

    def compiled(self, dialect: Dialect) -> Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            found = self._compiled[dialect.name] = Compiled(self.statement, dialect)
        return found


class DriverReads(Protocol):
    """A reader that can run a ``Prepared`` select through its driver."""

    async def prepared_rows(
        self, prepared: Prepared, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]: ...


async def rows(reads: Any, prepared: Prepared, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """The rows of a prepared select: through the driver where the reader can, else
    through SQLAlchemy (same rows either way)."""
    fast = getattr(reads, "prepared_rows", None)
    if fast is not None:
        result: list[tuple[Any, ...]] = await fast(prepared, params)
        return result
    return [tuple(row) for row in await reads.execute(prepared.statement, dict(params))]
