"""May this account log in now, and by which channel: the one login policy.

Both edges ask ``may_log_in`` once the user name is known (the SSH edge in
``begin_auth``; the web portal at its login form) and act on the ``Decision``:
refuse, or take the first factor and then, when ``second_factor`` says so, a TOTP
code. What it checks, in this order:

1. the account exists and is ``active`` (a ``pending`` registrant is not);
2. it has not expired;
3. it is approved for the channel's procedure (QPR_0_SFTP, QPR_0_WEB);
4. the address lies in its allowed networks (when it has any);
5. it has fewer open sessions than ``max_sessions`` on live nodes (``sessions.py``;
   read only for accounts with a limit, so other logins cost no extra query);
6. when it needs a second factor (enrolled, a role in
   ``security.require_2fa_roles``, or the web channel, which always takes two), it
   has one and the instance's TOTP key is loaded.

The ``Refusal`` says which check failed, for the server's log only: the client
hears the same "Permission denied" for each of them and for a wrong key, so no
answer tells whether an IK exists or why it may not log in.

``revoked`` re-asks the first two checks for accounts already logged in, so an
account disabled or expired meanwhile loses its open sessions on every node.

``report`` is how both edges tell how a login ended (``login.ok`` or ``login.failed``
with a ``Refusal`` or a ``Failure`` as its reason, and ``qpr_logins_total``): once
per login, never with the secret that was tried.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from sqlalchemy import bindparam, select

from qprserver.accounts.enums import AccountStatus, Channel, Procedure, Role
from qprserver.config import SecuritySettings
from qprserver.db.engine import Reads
from qprserver.db.models import Account
from qprserver.observability import events

__all__ = [
    "Channel",
    "Decision",
    "Failure",
    "Refusal",
    "may_log_in",
    "report",
    "revoked",
    "standing",
]


class OpenSessions(Protocol):
    """What counts an account's open sessions (``sessions.NodeLease``)."""

    async def count_open(self, reads: Reads, account_id: int, now: datetime) -> int: ...


class Refusal(StrEnum):
    """Why a login is refused (logged, never told to the client)."""

    UNKNOWN = "unknown"
    DISABLED = "disabled"
    # A self-registered account not yet freigeschaltet (or its letter's code not yet
    # entered): the portal lets it on only to finish its registration.
    PENDING = "pending"
    EXPIRED = "expired"
    PROCEDURE = "procedure"
    NETWORK = "network"
    SESSION_LIMIT = "session-limit"
    NO_SECOND_FACTOR = "no-second-factor"


class Failure(StrEnum):
    """Why a login the policy allowed failed anyway (logged, never told to the client)."""

    WRONG_KEY = "wrong-key"
    WRONG_PASSWORD = "wrong-password"
    WRONG_CODE = "wrong-code"
    # The address or (for passwords and codes) the account is banned.
    BANNED = "banned"
    # The client gave up, or was cut off, before the login completed.
    ABORTED = "aborted"


def report(
    channel: Channel,
    method: str,
    *,
    account: str | None,
    address: str,
    reason: Refusal | Failure | None = None,
    session: str | None = None,
) -> None:
    """Tell how a login ended: ``reason`` None when it succeeded.

    ``method``: the factors given (``publickey``, ``password``, ``publickey+totp``,
    ``password+totp``); ``account``: the user name when it was a login name (the IK, or
    ``<IK>-<Standort>`` for a report registration's account).
    """
    events.login(
        channel,
        method,
        account=account,
        address=address,
        reason=None if reason is None else str(reason),
        session=session,
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of ``may_log_in``: the account when allowed, else why not."""

    account: Account | None
    refusal: Refusal | None
    second_factor: bool = False

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def standing(status: AccountStatus, expires_at: datetime | None, now: datetime) -> Refusal | None:
    """Whether an account may be logged in at all at ``now`` (checks 1 and 2)."""
    if status is AccountStatus.PENDING:
        return Refusal.PENDING
    if status is not AccountStatus.ACTIVE:
        return Refusal.DISABLED
    if expires_at is not None and expires_at <= now:
        return Refusal.EXPIRED
    return None


def second_factor_required(account: Account, channel: Channel, security: SecuritySettings) -> bool:
    """True when the account must give a TOTP code after its key or password."""
    if channel is Channel.WEB or account.totp_secret is not None:
        return True
    return any(Role(role) in account.roles for role in security.require_2fa_roles)


def _address_allowed(account: Account, address: str) -> bool:
    if not account.allowed_networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in account.allowed_networks)


async def may_log_in(
    reads: Reads,
    account: Account | None,
    *,
    channel: Channel,
    address: str,
    now: datetime,
    security: SecuritySettings,
    second_factor_ready: bool,
    open_sessions: OpenSessions,
) -> Decision:
    """Decide whether ``account`` may log in from ``address`` by ``channel`` now.

    ``reads`` is the caller's reader (``Database.quick_read`` at the edges);
    ``second_factor_ready`` is whether the instance's TOTP key is loaded;
    ``open_sessions`` counts the account's sessions (the process's node).
    """
    if account is None:
        return Decision(None, Refusal.UNKNOWN)
    refusal = standing(account.status, account.expires_at, now)
    if refusal is None and Procedure.of(channel) not in account.procedures:
        refusal = Refusal.PROCEDURE
    if refusal is None and not _address_allowed(account, address):
        refusal = Refusal.NETWORK
    if (
        refusal is None
        and account.max_sessions is not None
        and await open_sessions.count_open(reads, account.id, now) >= account.max_sessions
    ):
        refusal = Refusal.SESSION_LIMIT
    second = second_factor_required(account, channel, security)
    if refusal is None and second and (account.totp_secret is None or not second_factor_ready):
        refusal = Refusal.NO_SECOND_FACTOR
    return Decision(account, refusal, second)


# Built once: the refresh of every server process runs it every few seconds.
_STANDING = select(Account.id, Account.status, Account.expires_at).where(
    Account.id.in_(bindparam("ids", expanding=True))
)


async def revoked(reads: Reads, account_ids: Iterable[int], now: datetime) -> set[int]:
    """Those of ``account_ids`` that may no longer be logged in: removed, disabled or
    expired."""
    ids = set(account_ids)
    if not ids:
        return set()
    rows = (await reads.execute(_STANDING, {"ids": sorted(ids)})).all()
    present = {account_id for account_id, _, _ in rows}
    return (ids - present) | {
        account_id
        for account_id, status, expires_at in rows
        if standing(status, expires_at, now) is not None
    }
