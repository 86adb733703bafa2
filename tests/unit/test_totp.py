from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from cryptography.fernet import Fernet

from qprserver.accounts import service as accounts
from qprserver.audit.chain import Actor
from qprserver.config import MailSettings, SecuritySettings
from qprserver.db.engine import Database
from qprserver.errors import ConfigError, InvalidInput
from qprserver.notify.outbox import Notifier
from qprserver.security import totp

NOW = datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)
CLI = Actor("cli", "test")
IK = "180500016"


async def _enrol(db: Database, key: Fernet) -> totp.Enrolment:
    async with db.session() as session:
        await accounts.add_account(
            session,
            CLI,
            NOW,
            ik=IK,
            name="LV",
            email=None,
            roles=["recipient"],
            notifier=Notifier(MailSettings()),
        )
        return await totp.enable(session, CLI, NOW, IK, key, "QPR-Portal")


def _secret(enrolment: totp.Enrolment) -> str:
    return parse_qs(urlparse(enrolment.uri).query)["secret"][0]


async def _account_id(db: Database) -> int:
    async with db.read_session() as session:
        return (await accounts.get_account(session, IK)).id


async def _verify(db: Database, key: Fernet, code: str, at: datetime) -> bool:
    account_id = await _account_id(db)
    async with db.session() as session:
        return await totp.verify(session, account_id, code, key, at)


def test_key_file_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "totp.key"
    assert totp.ensure_key(path)
    first = path.read_bytes()
    assert not totp.ensure_key(path)
    assert path.read_bytes() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert isinstance(totp.load_key(path), Fernet)


def test_missing_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `qprserver init`"):
        totp.load_key(tmp_path / "none.key")


async def test_secret_is_stored_encrypted_and_uri_names_issuer_and_ik(db: Database) -> None:
    key = Fernet(Fernet.generate_key())
    enrolment = await _enrol(db, key)
    assert enrolment.uri.startswith("otpauth://totp/QPR-Portal:180500016?")
    async with db.read_session() as session:
        account = await accounts.get_account(session, IK)
    assert account.totp_secret is not None
    assert _secret(enrolment) not in account.totp_secret
    assert key.decrypt(account.totp_secret.encode()).decode() == _secret(enrolment)
    assert len(set(enrolment.recovery_codes)) == totp.RECOVERY_CODES


async def test_a_valid_code_works_once_and_a_reused_code_is_refused(db: Database) -> None:
    key = Fernet(Fernet.generate_key())
    code = pyotp.TOTP(_secret(await _enrol(db, key))).at(NOW)
    assert await _verify(db, key, code, NOW)
    assert not await _verify(db, key, code, NOW + timedelta(seconds=5))


async def test_codes_one_step_either_side_count_and_two_steps_do_not(db: Database) -> None:
    key = Fernet(Fernet.generate_key())
    generator = pyotp.TOTP(_secret(await _enrol(db, key)))
    assert not await _verify(db, key, generator.at(NOW - timedelta(seconds=60)), NOW)
    assert await _verify(db, key, generator.at(NOW - timedelta(seconds=30)), NOW)
    assert await _verify(db, key, generator.at(NOW + timedelta(seconds=30)), NOW)
    # An older step than one already used never counts again.
    assert not await _verify(db, key, generator.at(NOW), NOW)


async def test_recovery_codes_work_once(db: Database) -> None:
    key = Fernet(Fernet.generate_key())
    enrolment = await _enrol(db, key)
    code = enrolment.recovery_codes[3]
    assert await _verify(db, key, code.upper(), NOW)
    assert not await _verify(db, key, code, NOW)
    assert not await _verify(db, key, "000000-000000", NOW)


async def test_disable_removes_the_second_factor(db: Database) -> None:
    key = Fernet(Fernet.generate_key())
    await _enrol(db, key)
    async with db.session() as session:
        await totp.disable(session, CLI, NOW, IK)
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="keinen zweiten Faktor"):
            await totp.disable(session, CLI, NOW, IK)
        account = await accounts.get_account(session, IK)
    assert not totp.requires_second_factor(account, SecuritySettings())
    assert totp.requires_second_factor(account, SecuritySettings(require_2fa_roles=["recipient"]))
