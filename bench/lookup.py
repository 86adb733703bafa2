"""The per-file lookup of the SFTP edge on its own: microseconds per ``stat``/``open``.

An ``mget`` looks each file up twice (``stat``, then ``open``) through
``Database.quick_read`` and ``mailbox.lookup``. This times exactly that call over a
mailbox of ``--count`` deliveries, on SQLite (a temp file) or PostgreSQL
(``--db-url``, a fresh schema dropped after), and prints microseconds per lookup
(median of ``--repeat`` passes over every name). Its instruction count is steady
where wall time is not: ``valgrind --tool=callgrind python bench/lookup.py --repeat 1``.

    python bench/lookup.py [--count 5000] [--repeat 5] [--db-url postgresql+asyncpg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select
from util import pg_admin

from qprserver.accounts.enums import Role
from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from qprserver.db.engine import Database
from qprserver.db.models import Account, Delivery, Document
from qprserver.exchange import mailbox
from qprserver.exchange.folders import Folder


async def _fill(db: Database, count: int) -> Account:
    now = datetime.now(UTC)
    async with db.session() as session:
        for ik, roles in (("190500027", {Role.DEPOSITOR}), ("180500016", {Role.RECIPIENT})):
            session.add(
                Account(ik=ik, name=ik, roles=frozenset(roles), created_at=now, updated_at=now)
            )
    async with db.session() as session:
        ids = {ik: id_ for ik, id_ in await session.execute(select(Account.ik, Account.id))}
        doc_ids = (
            await session.scalars(
                insert(Document).returning(Document.id, sort_by_parameter_order=True),
                [
                    {
                        "depositor_id": ids["190500027"],
                        "name": f"510512349_m{i:05d}.pdf",
                        "kind": "pruefbericht",
                        "version": 1,
                        "current": True,
                        "sha256": f"{i:064x}",
                        "size": 100_000,
                        "uploaded_at": now,
                    }
                    for i in range(count)
                ],
            )
        ).all()
        await session.execute(
            insert(Delivery),
            [
                {
                    "document_id": doc_id,
                    "recipient_id": ids["180500016"],
                    "name": f"510512349_m{i:05d}.pdf",
                    "folder": "inbox",
                    "created_at": now,
                }
                for i, doc_id in enumerate(doc_ids)
            ],
        )
        recipient = await session.get_one(Account, ids["180500016"])
    return recipient


async def _main(args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:12]}" if args.db_url else None
    with tempfile.TemporaryDirectory(prefix="qprlookup-") as tmp:
        if args.db_url:
            await asyncio.to_thread(pg_admin, args.db_url, f"CREATE SCHEMA {schema}")
            settings = DatabaseSettings.model_validate({"url": args.db_url, "schema": schema})
        else:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'qpr.db'}"
            settings = DatabaseSettings.model_validate({"url": url})
        db = Database(settings)
        try:
            await migrate.upgrade(db)
            account = await _fill(db, args.count)
            names = [f"510512349_m{i:05d}.pdf" for i in range(args.count)]
            passes = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                for name in names:
                    entry = await db.quick_read(
                        lambda reads, name=name: mailbox.lookup(reads, account, Folder.INBOX, name)
                    )
                    assert entry.name == name
                passes.append((time.perf_counter() - start) / len(names) * 1e6)
            passes.sort()
            print(
                f"{db.dialect}: {passes[len(passes) // 2]:.1f} µs per lookup "
                f"(median of {args.repeat} passes over {args.count:,} names; "
                f"all: {', '.join(f'{p:.1f}' for p in passes)})"
            )
        finally:
            await db.dispose()
            if schema:
                await asyncio.to_thread(pg_admin, args.db_url, f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db-url", help="postgresql+asyncpg://…; default: SQLite in a temp folder")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
