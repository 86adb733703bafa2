"""What an account sees of its mailbox: folders, entries, acknowledgements, receipts.

Plain Python over the database; the SFTP edge maps paths onto these calls. Every
query is scoped to the acting account, so nothing of another account can be named.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import Role
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.db import prepared
from qprserver.db.engine import Reads
from qprserver.db.models import (
    Account,
    Bundle,
    Delivery,
    Document,
    DownloadReceipt,
    UploadProtocol,
)
from qprserver.db.prepared import Prepared
from qprserver.errors import NotFound
from qprserver.exchange.folders import (
    DELIVERY_FOLDERS,
    DEPOSITOR_FOLDERS,
    RECIPIENT_FOLDERS,
    Folder,
)
from qprserver.observability import events


def folders_for(account: Account) -> tuple[Folder, ...]:
    """The top-level folders an account sees, in a fixed order (memoised per role set:
    every stat, open and listing page asks)."""
    roles = account.roles
    return _folders_of(roles) if isinstance(roles, Hashable) else _folders_of.__wrapped__(roles)


@functools.cache
def _folders_of(roles: Collection[Role]) -> tuple[Folder, ...]:
    recipient = RECIPIENT_FOLDERS if Role.RECIPIENT in roles else ()
    return (*recipient, *(DEPOSITOR_FOLDERS if Role.DEPOSITOR in roles else ()))


@dataclass(frozen=True, slots=True)
class Entry:
    """One file in a folder."""

    id: int
    name: str
    size: int
    mtime: datetime
    sha256: str | None = None
    body: bytes | None = None  # protocols are small and served from the database


# Built once: stat, open and listing pages run these per request, and building a
# statement costs more than running it (SQLite).
_DELIVERY_COLUMNS = (
    select(Delivery.id, Delivery.name, Document.size, Delivery.created_at, Document.sha256)
    .join(Document, Delivery.document_id == Document.id)
    .where(Delivery.recipient_id == bindparam("account"), Delivery.folder == bindparam("folder"))
)

_DELIVERY_PAGE = (
    _DELIVERY_COLUMNS.where(Delivery.id > bindparam("after"))
    .order_by(Delivery.id)
    .limit(bindparam("limit"))
)
# Run by the driver itself (``db/prepared.py``): it is the one query of every
# ``stat`` and ``open`` in a download folder.
_DELIVERY_BY_NAME = Prepared(
    _DELIVERY_COLUMNS.where(Delivery.name == bindparam("name"))
    .order_by(Delivery.id.desc())
    .limit(1)
)


async def page(
    session: Reads, account: Account, folder: Folder, *, after_id: int, limit: int
) -> list[Entry]:
    """Up to limit entries of a folder with ids above after_id, by id (keyset paging)."""
    if folder not in folders_for(account):
        raise NotFound(f"/{folder}")
    if folder in DELIVERY_FOLDERS:
        rows = await session.execute(
            _DELIVERY_PAGE,
            {"account": account.id, "folder": folder, "after": after_id, "limit": limit},
        )
        return [Entry(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    if folder == Folder.BUNDLES:
        # Each bundle shows as two files; entry ids 2n and 2n+1 keep keyset paging simple.
        bundles = await session.scalars(
            select(Bundle)
            .where(
                Bundle.recipient_id == account.id,
                Bundle.acknowledged_at.is_(None),
                Bundle.id > after_id // 2,
            )
            .order_by(Bundle.id)
            .limit(limit)
        )
        return [e for b in bundles for e in _bundle_entries(b)]
    if folder == Folder.RECEIPTS:
        protocols = await session.scalars(
            select(UploadProtocol)
            .where(UploadProtocol.depositor_id == account.id, UploadProtocol.id > after_id)
            .order_by(UploadProtocol.id)
            .limit(limit)
        )
        return [_protocol_entry(p) for p in protocols]
    return []  # the outbox lists through ``outbox_page``


# A depositor's /outbox shows its current documents (read-only); /outbox/<IK>/ those
# it addressed to that recipient directly.
_OUTBOX_COLUMNS = select(
    Document.id,
    Document.name,
    Document.size,
    func.coalesce(Document.client_mtime, Document.uploaded_at),
    Document.sha256,
).where(Document.depositor_id == bindparam("account"), Document.current.is_(True))
_OUTBOX = {
    direct: _OUTBOX_COLUMNS.where(
        Document.direct_ik == bindparam("ik") if direct else Document.direct_ik.is_(None)
    )
    for direct in (False, True)
}
_OUTBOX_PAGE = {
    direct: stmt.where(Document.id > bindparam("after"))
    .order_by(Document.id)
    .limit(bindparam("limit"))
    for direct, stmt in _OUTBOX.items()
}
_OUTBOX_BY_NAME = {
    direct: stmt.where(Document.name == bindparam("name")) for direct, stmt in _OUTBOX.items()
}


async def outbox_page(
    session: Reads, account: Account, direct_ik: str | None, *, after_id: int, limit: int
) -> list[Entry]:
    """A depositor's current documents in /outbox (or /outbox/<direct_ik>), by id."""
    rows = await session.execute(
        _OUTBOX_PAGE[direct_ik is not None],
        {"account": account.id, "ik": direct_ik, "after": after_id, "limit": limit},
    )
    return [Entry(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def outbox_lookup(
    session: Reads, account: Account, direct_ik: str | None, name: str
) -> Entry:
    """The depositor's current document called name in /outbox (or /outbox/<IK>)."""
    row = (
        await session.execute(
            _OUTBOX_BY_NAME[direct_ik is not None],
            {"account": account.id, "ik": direct_ik, "name": name},
        )
    ).first()
    if row is None:
        raise NotFound(f"/{Folder.OUTBOX}/{name}")
    return Entry(row[0], row[1], row[2], row[3], row[4])


async def set_outbox_mtime(
    session: AsyncSession, account: Account, document_id: int, mtime: datetime
) -> None:
    """Keep the modification time a depositor's client set on its own document."""
    await session.execute(
        update(Document)
        .where(Document.id == document_id, Document.depositor_id == account.id)
        .values(client_mtime=mtime)
    )


def _bundle_entries(bundle: Bundle) -> tuple[Entry, Entry]:
    checksum = f"{bundle.sha256}  {bundle.name}\n".encode("ascii")
    return (
        Entry(bundle.id * 2, bundle.name, bundle.size, bundle.created_at, bundle.sha256),
        Entry(
            bundle.id * 2 + 1,
            bundle.name + ".sha256",
            len(checksum),
            bundle.created_at,
            None,
            checksum,
        ),
    )


async def _find_bundle(session: Reads, account: Account, name: str) -> Bundle | None:
    zip_name = name.removesuffix(".sha256")
    bundle: Bundle | None = await session.scalar(
        select(Bundle).where(
            Bundle.recipient_id == account.id,
            Bundle.name == zip_name,
            Bundle.acknowledged_at.is_(None),
        )
    )
    return bundle


async def acknowledge_bundle(
    session: AsyncSession, account: Account, actor: Actor, now: datetime, name: str
) -> None:
    """Deleting a bundle (or its .sha256) acknowledges it; both leave /bundles."""
    bundle = await _find_bundle(session, account, name)
    if bundle is None:
        raise NotFound(f"/bundles/{name}")
    bundle.acknowledged_at = now
    events.bundle_acknowledged(account.login, bundle=bundle.name, sha256=bundle.sha256)
    await audit.record(
        session,
        actor,
        "bundle.acknowledge",
        at=now,
        target=account.login,
        details={"bundle": bundle.id, "name": bundle.name, "sha256": bundle.sha256},
    )


def _protocol_entry(protocol: UploadProtocol) -> Entry:
    body = protocol.body.encode("utf-8")
    return Entry(protocol.id, protocol.file_name, len(body), protocol.created_at, None, body)


async def lookup(session: Reads, account: Account, folder: Folder, name: str) -> Entry:
    """The entry called name in folder, or NotFound."""
    if folder not in folders_for(account):
        raise NotFound(f"/{folder}")
    if folder in DELIVERY_FOLDERS:
        found = await prepared.rows(
            session,
            _DELIVERY_BY_NAME,
            {"account": account.id, "folder": str(folder), "name": name},
        )
        if not found:
            raise NotFound(f"/{folder}/{name}")
        row = found[0]
        return Entry(row[0], row[1], row[2], row[3], row[4])
    if folder == Folder.BUNDLES:
        bundle = await _find_bundle(session, account, name)
        if bundle is None:
            raise NotFound(f"/{folder}/{name}")
        zip_entry, checksum_entry = _bundle_entries(bundle)
        return checksum_entry if name.endswith(".sha256") else zip_entry
    if folder == Folder.RECEIPTS:
        protocol = await session.scalar(
            select(UploadProtocol).where(
                UploadProtocol.depositor_id == account.id, UploadProtocol.file_name == name
            )
        )
        if protocol is None:
            raise NotFound(f"/{folder}/{name}")
        return _protocol_entry(protocol)
    raise NotFound(f"/{folder}/{name}")


async def _free_name(session: AsyncSession, account: Account, folder: Folder, name: str) -> bool:
    taken = await session.scalar(
        select(Delivery.id).where(
            Delivery.recipient_id == account.id, Delivery.folder == folder, Delivery.name == name
        )
    )
    return taken is None


async def unique_name(
    session: AsyncSession, account: Account, folder: Folder, name: str, *alternatives: str
) -> str:
    """name, or the first free alternative, so a folder never shows a name twice."""
    for candidate in (name, *alternatives):
        if await _free_name(session, account, folder, candidate):
            return candidate
    raise RuntimeError("no free name")  # the last alternative carries a unique id


def free_names(
    conn: Connection, recipient_ids: Sequence[int], folder: Folder, name: str, *alternatives: str
) -> dict[int, str]:
    """``unique_name`` for many recipients at once on a synchronous connection, with one
    look-up: each recipient's first free name of name and the alternatives."""
    candidates = (name, *alternatives)
    rows = conn.execute(
        _TAKEN, {"recipients": list(recipient_ids), "folder": folder, "names": list(candidates)}
    )
    taken = {(recipient, taken_name) for recipient, taken_name in rows}
    chosen: dict[int, str] = {}
    for recipient in recipient_ids:
        free = [c for c in candidates if (recipient, c) not in taken]
        if not free:
            raise RuntimeError("no free name")  # the last alternative carries a unique id
        chosen[recipient] = free[0]
    return chosen


_TAKEN = select(Delivery.recipient_id, Delivery.name).where(
    Delivery.recipient_id.in_(bindparam("recipients", expanding=True)),
    Delivery.folder == bindparam("folder"),
    Delivery.name.in_(bindparam("names", expanding=True)),
)


def _with_suffix(name: str, suffix: str) -> str:
    stem, ext = posixpath.splitext(name)
    return f"{stem}{suffix}{ext}"


async def acknowledge(
    session: AsyncSession, account: Account, actor: Actor, now: datetime, name: str
) -> None:
    """Move a delivery from the inbox to the archive (the recipient deleted it)."""
    delivery = await session.scalar(
        select(Delivery).where(
            Delivery.recipient_id == account.id,
            Delivery.folder == Folder.INBOX,
            Delivery.name == name,
        )
    )
    if delivery is None:
        raise NotFound(f"/{Folder.INBOX}/{name}")
    document = await session.get_one(Document, delivery.document_id)
    delivery.name = await unique_name(
        session,
        account,
        Folder.ARCHIVE,
        delivery.name,
        _with_suffix(delivery.name, f".v{document.version}"),
        _with_suffix(delivery.name, f"~{delivery.id}"),
    )
    delivery.folder = Folder.ARCHIVE
    delivery.acknowledged_at = now
    events.acknowledged(account.login, document=name, delivery=delivery.id, sha256=document.sha256)
    await audit.record(
        session,
        actor,
        "delivery.acknowledge",
        at=now,
        target=account.login,
        details={"delivery": delivery.id, "name": name, "sha256": document.sha256},
    )


async def deliveries_of_document(
    session: AsyncSession, document_id: int
) -> list[dict[str, object]]:
    """Who received a document, where it is, and its download receipts (for depositors)."""
    rows = (
        await session.execute(
            select(Delivery, Account.ik)
            .join(Account, Delivery.recipient_id == Account.id)
            .where(Delivery.document_id == document_id)
            .order_by(Account.ik)
        )
    ).all()
    result: list[dict[str, object]] = []
    for delivery, ik in rows:
        receipts = (
            await session.scalars(
                select(DownloadReceipt)
                .where(DownloadReceipt.delivery_id == delivery.id)
                .order_by(DownloadReceipt.id)
            )
        ).all()
        result.append(
            {
                "recipient": ik,
                "folder": delivery.folder,
                "name": delivery.name,
                "delivered_at": delivery.created_at.isoformat(),
                "acknowledged_at": delivery.acknowledged_at.isoformat()
                if delivery.acknowledged_at
                else None,
                "downloads": [
                    {"at": r.at.isoformat(), "sha256": r.sha256, "remote": r.remote}
                    for r in receipts
                ],
            }
        )
    return result


def protocol_json(data: dict[str, object]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
