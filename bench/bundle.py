"""Scenario 7: build one weekly bundle of many documents; time and peak memory.

    python bench/bundle.py [--count 10000] [--size 102400] [--db-url URL]

Documents are stored through the blob store and recorded as deliveries of last week
to one recipient with bundles switched on; then the ``bundles`` job runs in a fresh
process, whose wall time and peak RSS are reported (JSON on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util import pg_admin

from qprserver.config import (
    Settings,
    parse_config,
)
from qprserver.db import migrate
from qprserver.db.engine import Database
from qprserver.db.models import (
    Account,
    Bundle,
    Delivery,
    Document,
)
from qprserver.storage.local import FileBlobStore

RECIPIENT = "180500016"
DEPOSITOR = "190500027"
FACILITY = "510512349"
BUILD_AT = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 02:00 in Berlin
WEEK_DAY = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)  # inside ISO week 46


def settings_for(root: Path, db_url: str, schema: str) -> Settings:
    database: dict[str, Any] = {"url": db_url or f"sqlite+aiosqlite:///{root / 'bench.db'}"}
    if schema:
        database["schema"] = schema
    return parse_config(
        {"storage": {"data_dir": str(root / "data")}, "database": database},
        root / "bench.toml",
    )


async def populate(settings: Settings, count: int, size: int) -> None:
    """Accounts, blobs and deliveries of last week."""
    db = Database(settings.database)
    store = FileBlobStore(settings.storage.data_dir, settings.server.node_id)
    now = WEEK_DAY
    try:
        await migrate.upgrade(db)
        async with db.session() as session:
            recipient = Account(
                ik=RECIPIENT,
                name="Landesverband",
                email=None,
                roles="recipient",
                land="NW",
                status="active",
                notify=False,
                bundles=True,
                created_at=now,
                updated_at=now,
            )
            depositor = Account(
                ik=DEPOSITOR,
                name="MD",
                email=None,
                roles="depositor",
                land="NW",
                status="active",
                notify=False,
                created_at=now,
                updated_at=now,
            )
            session.add_all([recipient, depositor])
            await session.flush()
            recipient_id, depositor_id = recipient.id, depositor.id
        filler = os.urandom(size)
        batch: list[tuple[str, str, int]] = []
        for i in range(count):
            data = b"%PDF-1.7\n" + i.to_bytes(8, "big") + filler[: size - 25] + b"\n%%EOF\n"
            writer = store.begin_write()
            writer.write(0, data)
            info = writer.finish()
            batch.append((f"{FACILITY}_bericht_{i:05d}.pdf", info.sha256, info.size))
            if len(batch) == 1000 or i == count - 1:
                async with db.session() as session:
                    docs = [
                        Document(
                            depositor_id=depositor_id,
                            name=name,
                            kind="pruefbericht",
                            subject_ik=FACILITY,
                            version=1,
                            current=True,
                            sha256=sha,
                            size=length,
                            uploaded_at=now,
                        )
                        for name, sha, length in batch
                    ]
                    session.add_all(docs)
                    await session.flush()
                    session.add_all(
                        Delivery(
                            document_id=d.id,
                            recipient_id=recipient_id,
                            name=d.name,
                            folder="inbox",
                            created_at=now,
                            notified_at=now,
                        )
                        for d in docs
                    )
                batch = []
    finally:
        await db.dispose()


async def build(settings: Settings) -> dict[str, Any]:
    """Run the bundles job once, as the scheduler would on Monday."""
    from qprserver.jobs.registry import run_job
    from qprserver.notify.outbox import Notifier
    from qprserver.service import job_context

    db = Database(settings.database)
    try:
        outcome = await run_job(
            job_context(settings, db, Notifier(settings.mail)), "bundles", BUILD_AT
        )
        async with db.read_session() as session:
            from sqlalchemy import select

            bundle = await session.scalar(select(Bundle))
        assert bundle is not None
        return {
            "ran": outcome.ran,
            "sha256": bundle.sha256,
            "size": bundle.size,
            "count": bundle.count,
        }
    finally:
        await db.dispose()


def _child(settings_root: str, db_url: str, schema: str) -> None:
    settings = settings_for(Path(settings_root), db_url, schema)
    result_base = _rss_now_mb()
    start = time.perf_counter()
    result = asyncio.run(build(settings))
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_before_build_mb"] = result_base  # the process with qprserver imported
    print(json.dumps(result))


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(count: int, size: int, db_url: str = "") -> dict[str, Any]:
    """Populate, build in a fresh process, verify; the figures as a dict."""
    schema = ""
    with tempfile.TemporaryDirectory(prefix="qpr-bench-bundle-") as tmp:
        root = Path(tmp)
        if db_url:
            schema = "bench_" + uuid.uuid4().hex[:10]
            pg_admin(db_url, f"CREATE SCHEMA {schema}")
        try:
            settings = settings_for(root, db_url, schema)
            started = time.perf_counter()
            asyncio.run(populate(settings, count, size))
            populate_s = time.perf_counter() - started
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(root),
                    "--db-url",
                    db_url,
                    "--schema",
                    schema,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
            store = FileBlobStore(settings.storage.data_dir, settings.server.node_id)
            path = store.path_for(result["sha256"])
            with zipfile.ZipFile(path) as archive:
                members = len(archive.namelist())
            result.update(
                {
                    "documents": count,
                    "document_bytes": size,
                    "zip_members": members,
                    "populate_seconds": round(populate_s, 1),
                }
            )
            return result
        finally:
            if schema:
                pg_admin(db_url, f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--db-url", default="")
    parser.add_argument("--child", default="")
    parser.add_argument("--schema", default="")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.db_url, args.schema)
        return
    print(json.dumps(run(args.count, args.size, args.db_url), indent=2))


if __name__ == "__main__":
    main()
