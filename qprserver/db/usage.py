"""The triggers that keep ``depositor_usage`` equal to the sizes of each depositor's
current documents (the quota's count), on SQLite and on PostgreSQL.

The quota check and ``statvfs`` read one row instead of summing a depositor's
documents (a depositor of a busy year holds a hundred thousand of them). The row is
written only here, by row triggers on ``documents`` (insert, delete, update of
``current``, ``size`` or ``depositor_id``), inside the transaction that changes the
documents: no code path can change a document and forget the total, and concurrent
transactions add their deltas under the row's lock (PostgreSQL: ``INSERT … ON
CONFLICT DO UPDATE``; SQLite has one writer at a time).

A migration that makes SQLite recreate ``documents`` (``batch_alter_table`` copies
the table, drops the old one and renames the copy) drops these triggers with it:
such a migration calls ``create_triggers`` again at its end. ``missing_triggers``
names the ones a database lacks; ``db check`` reports them.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

# SQLite: one trigger per event. ``current`` is quoted: a keyword in window frames.
_SQLITE = {
    "documents_usage_insert": """
CREATE TRIGGER documents_usage_insert AFTER INSERT ON documents
WHEN NEW."current"
BEGIN
    INSERT INTO depositor_usage (depositor_id, used) VALUES (NEW.depositor_id, NEW.size)
    ON CONFLICT (depositor_id) DO UPDATE SET used = used + excluded.used;
END
""",
    "documents_usage_delete": """
CREATE TRIGGER documents_usage_delete AFTER DELETE ON documents
WHEN OLD."current"
BEGIN
    UPDATE depositor_usage SET used = used - OLD.size WHERE depositor_id = OLD.depositor_id;
END
""",
    "documents_usage_update": """
CREATE TRIGGER documents_usage_update
AFTER UPDATE OF "current", size, depositor_id ON documents
WHEN OLD."current" OR NEW."current"
BEGIN
    UPDATE depositor_usage SET used = used - OLD.size
    WHERE OLD."current" AND depositor_id = OLD.depositor_id;
    INSERT INTO depositor_usage (depositor_id, used)
    SELECT NEW.depositor_id, NEW.size WHERE NEW."current"
    ON CONFLICT (depositor_id) DO UPDATE SET used = used + excluded.used;
END
""",
}

# PostgreSQL: one function, one trigger for the three events. The function keeps
# the search path it was created with, so it finds the table of its own schema
# whatever the session's path.
_PG_FUNCTION = "documents_usage"
_PG_TRIGGER = "documents_usage"
_PG = [
    f"""
CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD."current" THEN
            UPDATE depositor_usage SET used = used - OLD.size
            WHERE depositor_id = OLD.depositor_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW."current" THEN
            INSERT INTO depositor_usage AS u (depositor_id, used)
            VALUES (NEW.depositor_id, NEW.size)
            ON CONFLICT (depositor_id) DO UPDATE SET used = u.used + EXCLUDED.used;
        END IF;
    END IF;
    RETURN NULL;
END
$$
""",
    f"""
CREATE TRIGGER {_PG_TRIGGER}
AFTER INSERT OR DELETE OR UPDATE OF "current", size, depositor_id ON documents
FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()
""",
]

_BACKFILL = """
INSERT INTO depositor_usage (depositor_id, used)
SELECT depositor_id, SUM(size) FROM documents WHERE "current" GROUP BY depositor_id
"""


def create_triggers(conn: Connection) -> None:
    """Create the triggers (and on PostgreSQL their function)."""
    if conn.dialect.name == "sqlite":
        for ddl in _SQLITE.values():
            conn.exec_driver_sql(ddl)
    else:
        for ddl in _PG:
            conn.exec_driver_sql(ddl)


def drop_triggers(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        for name in _SQLITE:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    else:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_PG_TRIGGER} ON documents")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")


def recount(conn: Connection) -> None:
    """Set every depositor's total from its documents (under the triggers' watch:
    on PostgreSQL writers of ``documents`` wait until the transaction ends)."""
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql("LOCK TABLE documents IN SHARE ROW EXCLUSIVE MODE")
    conn.exec_driver_sql("DELETE FROM depositor_usage")
    conn.exec_driver_sql(_BACKFILL)


def missing_triggers(conn: Connection) -> list[str]:
    """The triggers on ``documents`` that keep ``depositor_usage`` and are not there."""
    if conn.dialect.name == "sqlite":
        found = set(
            conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :t"),
                {"t": "documents"},
            ).scalars()
        )
        return [name for name in _SQLITE if name not in found]
    found = set(
        conn.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
                " AND tgrelid = CAST('documents' AS regclass)"
            )
        ).scalars()
    )
    return [name for name in [_PG_TRIGGER] if name not in found]
