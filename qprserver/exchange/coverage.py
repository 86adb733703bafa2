"""Download coverage: when the byte ranges one account read make a complete download.

A receipt (Abrufnachweis) says the recipient has the whole file. Most downloads read
it through one handle, and that handle alone decides. Resumed downloads (``reget``,
``curl -C -``) and parallel ones (``pget -n 4``, several connections each reading a
part) read it through several handles, in several sessions and maybe several server
processes: each such handle leaves its ranges in ``download_coverage`` when it
closes, and the close whose ranges complete the union writes the receipt, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, Table, delete, insert, select, update

from qprserver.db.models import Delivery, DownloadCoverage

if TYPE_CHECKING:
    # receipts builds on this module; at run time a read is told apart by PartialRead.
    from qprserver.exchange.receipts import Download

Range = tuple[int, int]  # start, end (exclusive)

# Kept per delivery at most; a client reading more disjoint pieces than this is no
# download tool, and ranges beyond these wait for another read.
MAX_RANGES = 1000

_COVERAGE = cast(Table, DownloadCoverage.__table__)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-empty ranges with those that overlap or touch joined."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged[:MAX_RANGES]


def covers(ranges: Sequence[Range], size: int) -> bool:
    """True when merged ``ranges`` hold every byte of a file of ``size`` bytes."""
    if size <= 0:
        return True
    return bool(ranges) and ranges[0][0] <= 0 and ranges[0][1] >= size


def encode(ranges: Sequence[Range]) -> str:
    return ",".join(f"{start}-{end}" for start, end in ranges)


def decode(text: str) -> list[Range]:
    """The ranges of ``encode``; an unreadable entry is dropped, never fatal."""
    ranges: list[Range] = []
    for item in text.split(","):
        start, _, end = item.partition("-")
        if start.isdigit() and end.isdigit():
            ranges.append((int(start), int(end)))
    return merge(ranges)


@dataclass(frozen=True, slots=True)
class PartialRead:
    """What one handle read of a delivery without covering it; settled in batches."""

    download: Download  # the receipt, should these ranges complete the file
    size: int
    ranges: tuple[Range, ...]


def settle(conn: Connection, reads: Sequence[Download | PartialRead]) -> list[Download]:
    """Fold partial reads into the stored coverage; the downloads they complete.

    ``reads`` are complete downloads and partial reads in the order their handles
    closed; runs in the caller's write transaction. A complete download starts
    afresh: the ranges of its delivery read before it go, so they never make a second
    receipt with a part read later. A partial read is merged with the ranges of its
    delivery; when the union covers the file, its ``download`` is returned (to be
    recorded as a receipt) and the ranges go, otherwise the union is stored. The
    deliveries' rows are locked first (PostgreSQL; SQLite writers hold the database
    lock), so two server processes settling parts of one file never both miss, or
    both make, the receipt.
    """
    partial = {r.download.delivery_id for r in reads if isinstance(r, PartialRead)}
    only_complete = {r.delivery_id for r in reads if not isinstance(r, PartialRead)} - partial
    if only_complete:
        conn.execute(delete(_COVERAGE).where(_COVERAGE.c.delivery_id.in_(sorted(only_complete))))
    if not partial:
        return []
    # Deliveries removed meanwhile (retention) are skipped: their reads count for nothing.
    ids = list(
        conn.execute(
            select(Delivery.id)
            .where(Delivery.id.in_(sorted(partial)))
            .order_by(Delivery.id)
            .with_for_update()
        ).scalars()
    )
    stored = {
        row.delivery_id: decode(row.ranges)
        for row in conn.execute(
            select(_COVERAGE.c.delivery_id, _COVERAGE.c.ranges).where(
                _COVERAGE.c.delivery_id.in_(ids)
            )
        )
    }
    state = {delivery: stored.get(delivery, []) for delivery in ids}
    completed: list[Download] = []
    last: dict[int, datetime] = {}
    for read in reads:
        if not isinstance(read, PartialRead):
            if read.delivery_id in state:
                state[read.delivery_id] = []
            continue
        delivery = read.download.delivery_id
        if delivery not in state:
            continue
        ranges = merge([*state[delivery], *read.ranges])
        last[delivery] = read.download.at
        if covers(ranges, read.size):
            completed.append(read.download)
            state[delivery] = []
        else:
            state[delivery] = ranges
    for delivery, ranges in state.items():
        if not ranges:
            if delivery in stored:
                conn.execute(delete(_COVERAGE).where(_COVERAGE.c.delivery_id == delivery))
        elif delivery not in stored:
            conn.execute(
                insert(_COVERAGE).values(
                    delivery_id=delivery, ranges=encode(ranges), updated_at=last[delivery]
                )
            )
        elif ranges != stored[delivery]:
            conn.execute(
                update(_COVERAGE)
                .where(_COVERAGE.c.delivery_id == delivery)
                .values(ranges=encode(ranges), updated_at=last[delivery])
            )
    return completed
