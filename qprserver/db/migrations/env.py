"""Alembic environment: runs on a connection handed in by qprserver.db.migrate."""

from __future__ import annotations

from alembic import context

from qprserver.db import models  # noqa: F401  (registers the tables)
from qprserver.db.base import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `qprserver db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
