"""What ``df`` shows an account: its own space, never the host's disks.

A depositor sees its quota (``storage.depositor_quota_bytes``) as the size, the
current versions of its documents as used, and the rest as free, so sync tools that
ask before uploading get the limit the server enforces. A recipient cannot write:
it sees what its inbox and archive hold as the size, all of it used, nothing free,
and a read-only file system.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from qprserver.accounts.enums import Role
from qprserver.db.engine import Reads
from qprserver.db.models import Account, Delivery, DepositorUsage, Document
from qprserver.exchange.folders import DELIVERY_FOLDERS

BLOCK = 4096


@dataclass(frozen=True, slots=True)
class Space:
    """Sizes in bytes as ``statvfs`` reports them."""

    total: int
    free: int
    read_only: bool

    def blocks(self, size: int) -> int:
        return -(-size // BLOCK)


async def used_by_depositor(reads: Reads, account: Account) -> int:
    """Bytes of the depositor's current documents (what the quota counts): the total
    the triggers on ``documents`` keep (``db.usage``)."""
    used = await reads.scalar(
        select(DepositorUsage.used).where(DepositorUsage.depositor_id == account.id)
    )
    return int(used or 0)


async def held_by_recipient(reads: Reads, account: Account) -> int:
    """Bytes of the documents in the recipient's inbox and archive."""
    held = await reads.scalar(
        select(func.coalesce(func.sum(Document.size), 0))
        .select_from(Delivery)
        .join(Document, Delivery.document_id == Document.id)
        .where(Delivery.recipient_id == account.id, Delivery.folder.in_(DELIVERY_FOLDERS))
    )
    return int(held or 0)


async def space_of(reads: Reads, account: Account, depositor_quota: int) -> Space:
    """The account's space: a depositor's quota, or a recipient's read-only holdings."""
    if account.has_role(Role.DEPOSITOR):
        used = await used_by_depositor(reads, account)
        return Space(depositor_quota, max(0, depositor_quota - used), read_only=False)
    return Space(await held_by_recipient(reads, account), 0, read_only=True)
