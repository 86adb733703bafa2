"""The login policy (``accounts/access.py``): one test per reason, on a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from qprserver.accounts import access
from qprserver.accounts import service as accounts
from qprserver.accounts.access import Channel, Decision, Refusal
from qprserver.accounts.enums import AccountStatus, Procedure, Role
from qprserver.accounts.sessions import NodeLease
from qprserver.audit.chain import Actor
from qprserver.clock import FixedClock
from qprserver.config import MailSettings, SecuritySettings
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account
from qprserver.notify.outbox import Notifier

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CLI = Actor("cli", "test")
IK = "105830016"
# Mails are queued to the real outbox table and never sent here.
MAIL = Notifier(MailSettings())
ADDRESS = "192.0.2.7"


async def _account(db: Database, roles: tuple[str, ...] = ("recipient",), **changes: Any) -> None:
    async with db.session() as session:
        await accounts.add_account(
            session,
            CLI,
            NOW,
            ik=IK,
            name="AOK",
            email=None,
            roles=roles,
            land=None,
            notifier=MAIL,
        )
        if changes:
            await accounts.update_account(session, CLI, NOW, IK, **changes)


async def _decide(
    db: Database,
    *,
    ik: str = IK,
    address: str = ADDRESS,
    channel: Channel = Channel.SFTP,
    now: datetime = NOW,
    security: SecuritySettings | None = None,
    second_factor_ready: bool = True,
    node: NodeLease | None = None,
) -> Decision:
    async def work(reads: Reads) -> Decision:
        account = await reads.scalar(select(Account).where(Account.ik == ik))
        return await access.may_log_in(
            reads,
            account,
            channel=channel,
            address=address,
            now=now,
            security=security or SecuritySettings(),
            second_factor_ready=second_factor_ready,
            open_sessions=node or NodeLease(db, FixedClock(now)),
        )

    return await db.quick_read(work)


async def test_an_active_account_from_anywhere_may_log_in_with_its_first_factor_alone(
    db: Database,
) -> None:
    await _account(db)
    decision = await _decide(db)
    assert decision.allowed and decision.refusal is None
    assert decision.account is not None and decision.account.ik == IK
    assert not decision.second_factor


async def test_an_unknown_account_is_refused_as_unknown(db: Database) -> None:
    decision = await _decide(db, ik="260326822")
    assert (decision.allowed, decision.refusal, decision.account) == (False, Refusal.UNKNOWN, None)


async def test_a_disabled_account_is_refused_as_disabled(db: Database) -> None:
    await _account(db)
    async with db.session() as session:
        await accounts.set_status(session, CLI, NOW, IK, AccountStatus.DISABLED, MAIL)
    assert (await _decide(db)).refusal is Refusal.DISABLED


async def test_an_account_is_refused_as_expired_from_its_expiry_on(db: Database) -> None:
    await _account(db, expires_at=NOW + timedelta(hours=1))
    assert (await _decide(db, now=NOW + timedelta(minutes=59))).allowed
    assert (await _decide(db, now=NOW + timedelta(hours=1))).refusal is Refusal.EXPIRED


async def test_an_address_outside_the_allowed_networks_is_refused_as_network(
    db: Database,
) -> None:
    await _account(db, allowed_networks=["10.0.0.0/8", "2001:db8::/32"])
    assert (await _decide(db, address="10.1.2.3")).allowed
    assert (await _decide(db, address="2001:db8::1")).allowed
    assert (await _decide(db, address=ADDRESS)).refusal is Refusal.NETWORK
    assert (await _decide(db, address="not an address")).refusal is Refusal.NETWORK


async def test_an_account_at_its_session_limit_is_refused_as_session_limit(db: Database) -> None:
    await _account(db, max_sessions=2)
    elsewhere, here = NodeLease(db, FixedClock(NOW)), NodeLease(db, FixedClock(NOW))
    await elsewhere.join()
    await here.join()
    async with db.read_session() as session:
        account_id = (await accounts.get_account(session, IK)).id
    elsewhere.reserve(account_id)
    first = await elsewhere.open_session(account_id, 2, Channel.SFTP, ADDRESS)
    assert first is not None and (await _decide(db, node=here)).allowed
    # A login completed on this node counts before its row is written.
    here.reserve(account_id)
    assert (await _decide(db, node=here)).refusal is Refusal.SESSION_LIMIT
    here.release(account_id)
    await elsewhere.close_session(first)
    elsewhere.release(account_id)
    assert (await _decide(db, node=here)).allowed


async def test_an_enrolled_account_needs_a_second_factor_and_the_instance_key(
    db: Database,
) -> None:
    await _account(db)
    async with db.session() as session:
        (await accounts.get_account(session, IK)).totp_secret = "encrypted"
    decision = await _decide(db)
    assert decision.allowed and decision.second_factor
    assert (await _decide(db, second_factor_ready=False)).refusal is Refusal.NO_SECOND_FACTOR


async def test_a_role_that_requires_two_factors_refuses_an_account_without_one(
    db: Database,
) -> None:
    await _account(db, roles=("recipient", "depositor"))
    security = SecuritySettings(require_2fa_roles=[Role.DEPOSITOR.value])
    decision = await _decide(db, security=security)
    assert (decision.refusal, decision.second_factor) == (Refusal.NO_SECOND_FACTOR, True)
    assert (await _decide(db, security=SecuritySettings(require_2fa_roles=["admin"]))).allowed


async def test_the_web_channel_always_takes_a_second_factor(db: Database) -> None:
    await _account(db)
    decision = await _decide(db, channel=Channel.WEB)
    assert (decision.refusal, decision.second_factor) == (Refusal.NO_SECOND_FACTOR, True)


async def test_disabled_wins_over_every_later_reason(db: Database) -> None:
    await _account(db, allowed_networks=["10.0.0.0/8"], expires_at=NOW - timedelta(days=1))
    async with db.session() as session:
        await accounts.set_status(session, CLI, NOW, IK, AccountStatus.DISABLED, MAIL)
    assert (await _decide(db, channel=Channel.WEB)).refusal is Refusal.DISABLED


@pytest.mark.parametrize(
    ("status", "expires", "revoked"),
    [
        (AccountStatus.ACTIVE, None, False),
        (AccountStatus.ACTIVE, NOW + timedelta(seconds=1), False),
        (AccountStatus.ACTIVE, NOW, True),
        (AccountStatus.DISABLED, None, True),
    ],
)
async def test_revoked_names_accounts_disabled_expired_or_removed_since_login(
    db: Database, status: AccountStatus, expires: datetime | None, revoked: bool
) -> None:
    await _account(db)
    async with db.session() as session:
        account = await accounts.get_account(session, IK)
        account.status, account.expires_at = status, expires
        account_id = account.id
    removed = account_id + 1000

    async def work(reads: Reads) -> set[int]:
        return await access.revoked(reads, [account_id, removed], NOW)

    assert await db.quick_read(work) == ({account_id, removed} if revoked else {removed})


def test_the_database_keeps_the_values_it_had_before_the_enums() -> None:
    assert [s.value for s in AccountStatus] == ["active", "disabled", "pending"]
    assert [r.value for r in Role] == ["depositor", "recipient", "admin", "qs-stelle"]
    assert [c.value for c in Channel] == ["sftp", "web"]
    assert [p.value for p in Procedure] == ["QPR_0_WEB", "QPR_0_SFTP"]


async def test_an_account_is_refused_on_a_channel_whose_procedure_it_is_not_approved_for(
    db: Database,
) -> None:
    await _account(db, procedures=["QPR_0_WEB"])
    assert (await _decide(db, channel=Channel.SFTP)).refusal is Refusal.PROCEDURE
    web = await _decide(db, channel=Channel.WEB)
    # The web procedure is granted; the web always wants a second factor on top.
    assert web.refusal is Refusal.NO_SECOND_FACTOR and web.second_factor


async def test_a_pending_registrant_is_refused_on_every_channel(db: Database) -> None:
    await _account(db)
    async with db.session() as session:
        account = await accounts.get_account(session, IK)
        account.status = AccountStatus.PENDING
    for channel in Channel:
        assert (await _decide(db, channel=channel)).refusal is Refusal.PENDING
