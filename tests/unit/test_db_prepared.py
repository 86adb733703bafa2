"""Prepared selects run by the driver: the same rows as through SQLAlchemy, never a
stale one, and driver errors reported as SQLAlchemy reports them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, select
from sqlalchemy.exc import DBAPIError

from qprserver.audit.chain import Actor
from qprserver.config import DatabaseSettings
from qprserver.db import prepared
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account, Delivery, Document
from qprserver.db.prepared import Prepared
from qprserver.errors import NotFound
from qprserver.exchange import mailbox
from qprserver.exchange.folders import Folder

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SHA = "cd" * 32

_NAMES = Prepared(
    select(Delivery.id, Delivery.name, Delivery.created_at)
    .where(Delivery.recipient_id == bindparam("account"))
    .order_by(Delivery.id)
    .limit(2)
)


async def _recipient_with(db: Database, names: list[str]) -> Account:
    async with db.session() as session:
        depositor = Account(
            ik="190500027", name="MD", roles="depositor", created_at=T0, updated_at=T0
        )
        recipient = Account(
            ik="105830016", name="LV", roles="recipient", created_at=T0, updated_at=T0
        )
        session.add_all([depositor, recipient])
        await session.flush()
        for name in names:
            document = Document(
                depositor_id=depositor.id,
                name=name,
                kind="direkt",
                version=1,
                sha256=SHA,
                size=123,
                uploaded_at=T0,
            )
            session.add(document)
            await session.flush()
            session.add(
                Delivery(
                    document_id=document.id,
                    recipient_id=recipient.id,
                    name=name,
                    folder="inbox",
                    created_at=T0,
                )
            )
    return recipient


async def test_driver_rows_equal_the_rows_sqlalchemy_reads(db: Database) -> None:
    recipient = await _recipient_with(db, ["a.pdf", "b.pdf", "c.pdf"])

    async def both(reads: Reads) -> list[tuple[object, ...]]:
        return await prepared.rows(reads, _NAMES, {"account": recipient.id})

    through_driver = await db.quick_read(both)
    async with db.read_session() as session:
        through_sqlalchemy = await both(session)

    assert through_driver == through_sqlalchemy
    assert [row[1] for row in through_driver] == ["a.pdf", "b.pdf"]  # the literal LIMIT 2
    assert through_driver[0][2] == T0  # the column type's processing: an aware datetime


async def test_lookup_after_an_acknowledgement_never_sees_the_old_folder(db: Database) -> None:
    recipient = await _recipient_with(db, ["a.pdf"])

    def look(folder: Folder) -> object:
        return db.quick_read(lambda reads: mailbox.lookup(reads, recipient, folder, "a.pdf"))

    before = await look(Folder.INBOX)
    assert isinstance(before, mailbox.Entry) and before.size == 123
    async with db.session() as session:
        await mailbox.acknowledge(session, recipient, Actor(recipient.ik, "test"), T0, "a.pdf")

    with pytest.raises(NotFound):
        await look(Folder.INBOX)
    after = await look(Folder.ARCHIVE)
    assert isinstance(after, mailbox.Entry) and after.id == before.id


def test_a_parameter_left_out_is_an_error_not_a_null() -> None:
    from sqlalchemy.dialects import sqlite

    compiled = _NAMES.compiled(sqlite.dialect())

    assert compiled.args({"account": 7})[:2] == [7, 2]  # SQLite adds OFFSET 0
    with pytest.raises(KeyError):
        compiled.args({})


async def test_a_driver_error_surfaces_as_sqlalchemy_raises_it(
    database_settings: DatabaseSettings,
) -> None:
    # SQLite: the driver's error re-raised as SQLAlchemy's; PostgreSQL: the connection
    # is dropped and the select runs again the usual way, which raises it.
    db = Database(database_settings)  # not migrated: the table is missing
    try:
        with pytest.raises(DBAPIError, match=r"no such table|does not exist"):
            await db.quick_read(lambda reads: prepared.rows(reads, _NAMES, {"account": 1}))
    finally:
        await db.dispose()
