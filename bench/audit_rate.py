"""Audit-chain appends per second from several processes on one PostgreSQL database.

    python bench/audit_rate.py --db-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Each append takes the advisory lock of one of the chain's lanes until its
transaction commits (``qprserver/audit/chain.py``), so appends of up to that many
transactions at once run side by side. ``--processes`` processes (as many nodes'
workers) each append one event per transaction, as an upload does, for
``--seconds``; the total rate is what the chain allows every upload of every node
together.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from util import pg_admin

from qprserver.audit import chain as audit
from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from qprserver.db.engine import Database


async def _append_for(settings: DatabaseSettings, seconds: float) -> int:
    db = Database(settings, audit_key=b"k" * 32)
    actor = audit.Actor("bench", "local")
    count = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            async with db.session() as session:
                await audit.record(
                    session, actor, "bench.append", at=datetime.now(UTC), details={"n": count}
                )
            count += 1
    finally:
        await db.dispose()
    return count


def _worker(settings: DatabaseSettings, seconds: float, start: float) -> int:
    time.sleep(max(0.0, start - time.time()))  # all processes begin together
    return asyncio.run(_append_for(settings, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    schema = f"qprbench_{uuid.uuid4().hex[:12]}"
    pg_admin(args.db_url, f"CREATE SCHEMA {schema}")
    try:
        settings = DatabaseSettings.model_validate({"url": args.db_url, "schema": schema})
        asyncio.run(_migrate(settings))
        start = time.time() + 2
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            counts = pool.starmap(_worker, [(settings, args.seconds, start)] * args.processes)
        total = sum(counts) / args.seconds
        print(
            f"{args.processes} processes, one event per transaction: {total:.0f} appends/s "
            f"in total ({', '.join(f'{c / args.seconds:.0f}' for c in counts)} per process)"
        )
    finally:
        pg_admin(args.db_url, f"DROP SCHEMA {schema} CASCADE")


async def _migrate(settings: DatabaseSettings) -> None:
    db = Database(settings)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()


if __name__ == "__main__":
    main()
