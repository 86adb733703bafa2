"""A folder as a table: sorted, filtered and paged by key, for the web portal.

The SFTP edge lists folders by id (``mailbox.page``); a person in a browser wants
the newest first, by name or by kind, and to find one facility's documents among
100,000. Each page is one query that walks an index from a key (the last row of
the page before), never an offset, so page 2,000 costs what page 1 costs:

- by date: ``deliveries (recipient_id, folder, id)``; ids grow with delivery time;
- by name: ``deliveries (recipient_id, folder, name)``, then id;
- by kind: ``deliveries (recipient_id, folder, kind, id)`` (the delivery keeps its
  document's kind for this).

Every query is scoped to the acting account: an id of another account's delivery,
bundle or document is "not found", the same as one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select, tuple_
from sqlalchemy.orm import aliased

from qprserver.db.engine import Reads
from qprserver.db.models import (
    Account,
    Bundle,
    Delivery,
    Document,
    DownloadReceipt,
    UploadProtocol,
)
from qprserver.errors import NotFound
from qprserver.exchange.folders import DELIVERY_FOLDERS, Folder


class Sort(StrEnum):
    """The orders a folder can be shown in (values as in the portal's URLs)."""

    DATE = "datum"
    NAME = "name"
    KIND = "art"


@dataclass(frozen=True, slots=True)
class Row:
    """One delivery as a table row."""

    id: int
    name: str
    size: int
    delivered_at: datetime
    kind: str
    subject_ik: str | None
    depositor_ik: str
    sha256: str
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    # The key to ask for the next page with, or None on the last page.
    next_key: str | None


_Depositor = aliased(Account)
S = TypeVar("S", bound=Select[*tuple[Any, ...]])

_ROWS = (
    select(
        Delivery.id,
        Delivery.name,
        Document.size,
        Delivery.created_at,
        Document.kind,
        Document.subject_ik,
        _Depositor.ik,
        Document.sha256,
        Delivery.acknowledged_at,
    )
    .join(Document, Delivery.document_id == Document.id)
    .join(_Depositor, Document.depositor_id == _Depositor.id)
)


def _sort_columns(sort: Sort) -> tuple[object, ...]:
    if sort is Sort.NAME:
        return (Delivery.name, Delivery.id)
    if sort is Sort.KIND:
        return (Delivery.kind, Delivery.id)
    return (Delivery.id,)


def _key_of(row: Row, sort: Sort) -> str:
    if sort is Sort.NAME:
        return f"{row.id}:{row.name}"
    if sort is Sort.KIND:
        return f"{row.id}:{row.kind}"
    return str(row.id)


def _after(stmt: S, sort: Sort, key: str, descending: bool) -> S:
    """Rows after ``key`` in the order; a malformed key starts from the beginning."""
    ident, _, value = key.partition(":")
    if not ident.isdigit():
        return stmt
    last = int(ident)
    if sort is Sort.DATE:
        return stmt.where(Delivery.id < last if descending else Delivery.id > last)
    column = Delivery.name if sort is Sort.NAME else Delivery.kind
    here, there = tuple_(column, Delivery.id), tuple_(value, last)
    return stmt.where(here < there if descending else here > there)


def _filtered(stmt: S, query: str) -> S:
    """A nine-digit query is an IK (the facility's or the depositor's); else a part
    of the name, in any case."""
    query = query.strip()
    if not query:
        return stmt
    if len(query) == 9 and query.isdigit():
        return stmt.where(or_(Document.subject_ik == query, _Depositor.ik == query))
    return stmt.where(Delivery.name.icontains(query, autoescape=True))


async def deliveries(
    reads: Reads,
    account: Account,
    folder: Folder,
    *,
    sort: Sort = Sort.DATE,
    descending: bool = True,
    query: str = "",
    after: str = "",
    limit: int = 50,
) -> Page:
    """One page of the account's inbox or archive."""
    if folder not in DELIVERY_FOLDERS:
        raise NotFound(f"/{folder}")
    stmt = _ROWS.where(Delivery.recipient_id == account.id, Delivery.folder == folder)
    stmt = _filtered(stmt, query)
    if after:
        stmt = _after(stmt, sort, after, descending)
    columns = _sort_columns(sort)
    order = [c.desc() if descending else c.asc() for c in columns]  # type: ignore[attr-defined]
    result = await reads.execute(stmt.order_by(*order).limit(limit + 1))
    rows = [Row(*r) for r in result]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _key_of(rows[-1], sort) if more and rows else None)


async def delivery(reads: Reads, account: Account, delivery_id: int) -> Row:
    """The account's delivery in its inbox or archive; NotFound for any other id."""
    found = (
        await reads.execute(
            _ROWS.where(
                Delivery.id == delivery_id,
                Delivery.recipient_id == account.id,
                Delivery.folder.in_([str(f) for f in DELIVERY_FOLDERS]),
            )
        )
    ).first()
    if found is None:
        raise NotFound(f"Lieferung {delivery_id}")
    return Row(*found)


async def bundles(reads: Reads, account: Account) -> list[Bundle]:
    """The account's bundles not yet acknowledged, newest first."""
    rows = await reads.scalars(
        select(Bundle)
        .where(Bundle.recipient_id == account.id, Bundle.acknowledged_at.is_(None))
        .order_by(Bundle.id.desc())
    )
    return list(rows.all())


async def bundle(reads: Reads, account: Account, bundle_id: int) -> Bundle:
    """The account's bundle not yet acknowledged; NotFound for any other id."""
    found: Bundle | None = await reads.scalar(
        select(Bundle).where(
            Bundle.id == bundle_id,
            Bundle.recipient_id == account.id,
            Bundle.acknowledged_at.is_(None),
        )
    )
    if found is None:
        raise NotFound(f"Bündel {bundle_id}")
    return found


@dataclass(frozen=True, slots=True)
class Download:
    """A receipt as the depositor sees it."""

    recipient_ik: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Deposited:
    """A depositor's current document with who received it and who downloaded it."""

    document: Document
    recipients: list[str]
    downloads: list[Download]


async def deposited(
    reads: Reads, account: Account, *, before: int | None = None, limit: int = 50
) -> list[Deposited]:
    """The depositor's current documents, newest first, with recipients and receipts
    (three queries per page)."""
    stmt = select(Document).where(Document.depositor_id == account.id, Document.current.is_(True))
    if before is not None:
        stmt = stmt.where(Document.id < before)
    documents = list((await reads.scalars(stmt.order_by(Document.id.desc()).limit(limit))).all())
    ids = [d.id for d in documents]
    recipients: dict[int, list[str]] = {i: [] for i in ids}
    downloads: dict[int, list[Download]] = {i: [] for i in ids}
    if ids:
        delivered = await reads.execute(
            select(Delivery.document_id, Account.ik)
            .join(Account, Delivery.recipient_id == Account.id)
            .where(Delivery.document_id.in_(ids))
            .order_by(Account.ik)
        )
        for document_id, ik in delivered:
            recipients[document_id].append(ik)
        received = await reads.execute(
            select(Delivery.document_id, Account.ik, DownloadReceipt.at)
            .join(Delivery, DownloadReceipt.delivery_id == Delivery.id)
            .join(Account, DownloadReceipt.account_id == Account.id)
            .where(Delivery.document_id.in_(ids))
            .order_by(DownloadReceipt.at)
        )
        for document_id, ik, at in received:
            downloads[document_id].append(Download(ik, at))
    return [Deposited(d, recipients[d.id], downloads[d.id]) for d in documents]


async def protocols(
    reads: Reads, account: Account, *, before: int | None = None, limit: int = 50
) -> list[UploadProtocol]:
    """The depositor's upload protocols, newest first."""
    stmt = select(UploadProtocol).where(UploadProtocol.depositor_id == account.id)
    if before is not None:
        stmt = stmt.where(UploadProtocol.id < before)
    rows = await reads.scalars(stmt.order_by(UploadProtocol.id.desc()).limit(limit))
    return list(rows.all())


async def protocol(reads: Reads, account: Account, protocol_id: int) -> UploadProtocol:
    """The depositor's upload protocol; NotFound for any other id."""
    found: UploadProtocol | None = await reads.scalar(
        select(UploadProtocol).where(
            UploadProtocol.id == protocol_id, UploadProtocol.depositor_id == account.id
        )
    )
    if found is None:
        raise NotFound(f"Protokoll {protocol_id}")
    return found
