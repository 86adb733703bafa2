"""A forgotten password: a reset link by mail, for active accounts only.

``request_password_reset`` answers nothing about the address: the portal shows the
same page whether or not an account has it. A lost second factor is reset by the
operator only (``account totp reset``), never by mail.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import AccountStatus, TokenPurpose
from qprserver.accounts.fields import normalise_email
from qprserver.accounts.service import store_password
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import RegistrationSettings
from qprserver.db.models import Account
from qprserver.errors import InvalidInput
from qprserver.notify import registration_mails as mails
from qprserver.notify.links import mail_link
from qprserver.notify.outbox import Notifier
from qprserver.security import tokens


async def request_password_reset(
    session: AsyncSession,
    now: datetime,
    email: str,
    *,
    settings: RegistrationSettings,
    notifier: Notifier,
) -> None:
    """Mail a reset link to every active account with this address; nothing for an
    unknown one (the portal answers the same either way)."""
    try:
        address = normalise_email(email)
    except InvalidInput:
        return
    found = await session.scalars(
        select(Account).where(
            func.lower(Account.email) == (address or "").lower(),
            Account.status == AccountStatus.ACTIVE,
        )
    )
    for account in found:
        await mail_link(
            session,
            notifier,
            TokenPurpose.RESET,
            now,
            timedelta(hours=settings.reset_hours),
            key=f"password-reset:{account.id}",
            email=partial(
                mails.password_reset, account.login, account.name, hours=settings.reset_hours
            ),
            to_addr=account.email or address or "",
            account_id=account.id,
        )


async def reset_password(
    session: AsyncSession, now: datetime, token: str, password: str
) -> Account:
    """Set a new password by a reset token."""
    from qprserver.security.passwords import hash_password

    hashed = hash_password(password)
    row = await tokens.consume(session, TokenPurpose.RESET, token, now)
    account = await session.get_one(Account, row.account_id)
    await session.refresh(account, ["password"])
    store_password(account, hashed, now)
    await audit.record(
        session, Actor(account.login, "web"), "password.reset", at=now, target=account.login
    )
    return account
