"""A one-time link by mail: a new token for its owner and the mail that carries it.

The mail is queued in the caller's transaction under ``<key>:<start of the token's
hash>``: a retried transaction queues nothing twice, a new link is a new mail. Issuing
voids the owner's earlier links of the same purpose (``security.tokens``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import TokenPurpose
from qprserver.notify.emails import Email
from qprserver.notify.outbox import Notifier
from qprserver.security import tokens


async def mail_link(
    session: AsyncSession,
    notifier: Notifier,
    purpose: TokenPurpose,
    now: datetime,
    lifetime: timedelta,
    *,
    key: str,
    email: Callable[[str], Email],
    to_addr: str,
    registration_id: int | None = None,
    account_id: int | None = None,
    qb_registration_id: int | None = None,
) -> str:
    """Issue a token for its owner and queue ``email(token)`` to ``to_addr``; the token."""
    token = await tokens.issue(
        session,
        purpose,
        now,
        lifetime,
        registration_id=registration_id,
        account_id=account_id,
        qb_registration_id=qb_registration_id,
    )
    await notifier.queue_to(
        session,
        key=f"{key}:{tokens.digest(token)[:16]}",
        email=email(token),
        to_addr=to_addr,
        now=now,
        account_id=account_id,
    )
    return token
