"""Bench-only bulk population of qprserver: direct inserts through its models.

Uploading 100,000 documents over SFTP would take longer than the whole benchmark,
so the documents the download, ``mget`` and ``ls`` scenarios read are written here,
in-process, before ``serve`` starts: one ``Document`` (current version 1, kind
``pruefbericht``, from the depositor) and one ``Delivery`` into the recipient's
inbox per file, marked as already notified so no digest job runs during the
measurements. The blob of each file is a hard link to the very file OpenSSH serves
(same inode, same page cache), placed at its content address in the blob store.
The upload path itself (hashing, fsync, checks, routing, commit) is what scenario 2
measures through SFTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from qprserver.config import load_config
from qprserver.db.engine import Database
from qprserver.db.models import Account, Delivery, Document
from qprserver.storage.local import FileBlobStore

BATCH = 5000


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file: its name in the inbox, the file OpenSSH serves, its hash and size."""

    name: str
    path: Path
    sha256: str
    size: int


def _place_blob(store: FileBlobStore, spec: FileSpec) -> None:
    target = store.path_for(spec.sha256)
    if target.exists():
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.link(spec.path, target)
    except OSError:
        shutil.copyfile(spec.path, target)


async def _populate(
    config: Path, depositor_ik: str, subject_ik: str, inboxes: dict[str, list[FileSpec]]
) -> None:
    settings = load_config(config)
    store = FileBlobStore(settings.storage.data_dir, settings.server.node_id)
    db = Database(settings.database)
    now = datetime.now(UTC)
    try:
        async with db.session() as session:
            ids = dict((await session.execute(select(Account.ik, Account.id))).tuples().all())
        for recipient_ik, specs in inboxes.items():
            for spec in specs:
                _place_blob(store, spec)
            for start in range(0, len(specs), BATCH):
                chunk = specs[start : start + BATCH]
                async with db.session() as session:
                    doc_ids = (
                        await session.scalars(
                            insert(Document).returning(Document.id, sort_by_parameter_order=True),
                            [
                                {
                                    "depositor_id": ids[depositor_ik],
                                    "name": s.name,
                                    "kind": "pruefbericht",
                                    "subject_ik": subject_ik,
                                    "version": 1,
                                    "current": True,
                                    "sha256": s.sha256,
                                    "size": s.size,
                                    "uploaded_at": now,
                                }
                                for s in chunk
                            ],
                        )
                    ).all()
                    await session.execute(
                        insert(Delivery),
                        [
                            {
                                "document_id": doc_id,
                                "recipient_id": ids[recipient_ik],
                                "name": s.name,
                                "folder": "inbox",
                                "kind": "pruefbericht",
                                "created_at": now,
                                "notified_at": now,
                            }
                            for doc_id, s in zip(doc_ids, chunk, strict=True)
                        ],
                    )
    finally:
        await db.dispose()


def populate(
    config: Path, depositor_ik: str, subject_ik: str, inboxes: dict[str, list[FileSpec]]
) -> None:
    """Deliver the files to the recipients' inboxes; the server must be stopped or idle."""
    asyncio.run(_populate(config, depositor_ik, subject_ik, inboxes))
