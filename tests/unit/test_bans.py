from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from qprserver.config import SecuritySettings
from qprserver.db.engine import Database
from qprserver.errors import NotFound
from qprserver.observability import logs
from qprserver.security import bans

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SETTINGS = SecuritySettings(ban_threshold=3, ban_window=60, ban_time=100, ban_max_time=350)
ADDR = bans.address_key("192.0.2.9")


async def _fail(db: Database, times: int, at: datetime) -> list[str]:
    newly: list[str] = []
    for i in range(times):
        newly += await bans.record_failure(db, [ADDR], at + timedelta(seconds=i), SETTINGS)
    return newly


async def test_failures_over_the_threshold_ban_the_address(db: Database) -> None:
    assert await _fail(db, 2, NOW) == []
    assert not await bans.banned(db, [ADDR], NOW + timedelta(seconds=3))
    assert await _fail(db, 1, NOW + timedelta(seconds=2)) == [ADDR]
    assert await bans.banned(db, [ADDR], NOW + timedelta(seconds=3))
    assert not await bans.banned(db, [ADDR], NOW + timedelta(seconds=103))


async def test_failures_spread_beyond_the_window_do_not_ban(db: Database) -> None:
    for minute in range(5):
        await _fail(db, 2, NOW + timedelta(minutes=2 * minute))
    assert not await bans.banned(db, [ADDR], NOW + timedelta(minutes=9))


async def test_repeat_offences_double_the_ban_up_to_the_maximum(db: Database) -> None:
    start = NOW
    lengths = []
    for _ in range(4):
        await _fail(db, 3, start)
        (row,) = await bans.list_bans(db, start + timedelta(seconds=3))
        assert row.banned_until is not None
        lengths.append(round((row.banned_until - (start + timedelta(seconds=2))).total_seconds()))
        start = row.banned_until + timedelta(seconds=1)
    assert lengths == [100, 200, 350, 350]


async def test_a_ban_can_be_lifted_by_the_operator(db: Database) -> None:
    await _fail(db, 3, NOW)
    await bans.remove_ban(db, "192.0.2.9")
    assert not await bans.banned(db, [ADDR], NOW + timedelta(seconds=5))
    with pytest.raises(NotFound):
        await bans.remove_ban(db, "192.0.2.9")


def test_allowlisted_addresses_are_recognised() -> None:
    settings = SecuritySettings(allowlist=["10.0.0.0/8", "2001:db8::/32"])
    assert bans.allowlisted("10.1.2.3", settings)
    assert bans.allowlisted("2001:db8::1", settings)
    assert not bans.allowlisted("192.0.2.1", settings)
    assert not bans.allowlisted("not-an-address", settings)


async def test_banned_keys_tell_an_address_ban_from_an_account_ban(db: Database) -> None:
    account = bans.account_key("180500016")
    for i in range(3):
        await bans.record_failure(db, [account], NOW + timedelta(seconds=i), SETTINGS)
    later = NOW + timedelta(seconds=5)
    assert await bans.banned_keys(db, [ADDR, account], later) == {account}
    await _fail(db, 3, NOW)
    assert await bans.banned_keys(db, [ADDR, account], later) == {ADDR, account}
    assert await bans.banned_keys(db, [bans.address_key("192.0.2.10")], later) == set()


async def test_a_ban_set_and_lifted_is_told_once_each(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="qprserver.events"):
        await _fail(db, 3, NOW)
        await bans.remove_ban(db, "192.0.2.9")
    told = [(r.getMessage(), getattr(r, logs.FIELDS)) for r in caplog.records]
    until = (NOW + timedelta(seconds=102)).isoformat()
    assert told == [
        ("ban.set", {"key": ADDR, "until": until, "seconds": 100}),
        ("ban.lifted", {"key": ADDR}),
    ]
