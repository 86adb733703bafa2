from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import func, select

from qprserver.accounts import service as accounts
from qprserver.audit import chain as audit
from qprserver.audit import check as audit_check
from qprserver.audit.chain import Actor
from qprserver.config import MailSettings
from qprserver.db.engine import Database
from qprserver.db.models import Account, AuditEvent
from qprserver.errors import AlreadyExists, InvalidIK, InvalidInput, InvalidKey, NotFound
from qprserver.notify.outbox import Notifier
from qprserver.security.passwords import verify_password

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
CLI = Actor("cli", "test")
# A real one: the account mails go to the outbox table like in production.
MAIL = Notifier(MailSettings())


def _pubkey() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


async def _add(db: Database, ik: str = "105830016", **kw: object) -> Account:
    args: dict[str, object] = {
        "name": "AOK Pflegekasse",
        "email": "lv@example.org",
        "roles": ["recipient"],
    }
    args.update(kw)
    async with db.session() as session:
        return await accounts.add_account(session, CLI, NOW, ik=ik, notifier=MAIL, **args)  # type: ignore[arg-type]


async def _count(db: Database, model: type) -> int:
    async with db.read_session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_land_is_derived_from_the_ik(db: Database) -> None:
    account = await _add(db, "260326822")
    assert account.land == "NI"
    assert account.status == "active"


async def test_land_given_explicitly_wins(db: Database) -> None:
    assert (await _add(db, "661430035", land="by")).land == "BY"


async def test_invalid_ik_changes_nothing(db: Database) -> None:
    with pytest.raises(InvalidIK):
        await _add(db, "123456789")
    assert await _count(db, Account) == 0
    assert await _count(db, AuditEvent) == 0


async def test_duplicate_ik_is_refused_and_changes_nothing(db: Database) -> None:
    await _add(db)
    with pytest.raises(AlreadyExists, match="existiert bereits"):
        await _add(db, name="Other")
    assert await _count(db, Account) == 1
    assert await _count(db, AuditEvent) == 1


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"email": "not-an-address"}, "ungültige E-Mail-Adresse"),
        ({"roles": ["superuser"]}, "unbekannte Rolle superuser"),
        ({"roles": []}, "mindestens eine Rolle"),
        ({"name": "  "}, "Name darf nicht leer"),
        ({"land": "XX"}, "Unbekanntes Land"),
    ],
)
async def test_bad_account_input_is_refused(
    db: Database, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await _add(db, **kw)
    assert await _count(db, Account) == 0


async def test_keys_are_added_listed_and_removed_by_fingerprint(db: Database) -> None:
    await _add(db)
    async with db.session() as session:
        key = await accounts.add_key(session, CLI, NOW, "105830016", _pubkey() + " laptop", MAIL)
    async with db.session() as session:
        with pytest.raises(AlreadyExists):
            await accounts.add_key(session, CLI, NOW, "105830016", key.public_key + " again", MAIL)
    async with db.read_session() as session:
        account = await accounts.get_account(session, "105830016")
        assert [k.fingerprint for k in account.keys] == [key.fingerprint]
        assert account.keys[0].comment == "laptop"
    async with db.session() as session:
        await accounts.remove_key(
            session, CLI, NOW, "105830016", key.fingerprint.removeprefix("SHA256:")
        )
    async with db.session() as session:
        with pytest.raises(NotFound):
            await accounts.remove_key(session, CLI, NOW, "105830016", key.fingerprint)


async def test_weak_key_is_refused(db: Database) -> None:
    await _add(db)
    async with db.session() as session:
        with pytest.raises(InvalidKey):
            await accounts.add_key(session, CLI, NOW, "105830016", "ssh-dss AAAA", MAIL)


async def test_password_is_stored_as_argon2id_and_verifies(db: Database) -> None:
    await _add(db)
    async with db.session() as session:
        await accounts.set_password(session, CLI, NOW, "105830016", "correct horse battery")
    async with db.read_session() as session:
        account = await accounts.get_account(session, "105830016")
        assert account.password is not None
        assert account.password.password_hash.startswith("$argon2id$")
        assert verify_password(account.password.password_hash, "correct horse battery")
        assert not verify_password(account.password.password_hash, "wrong")
    assert not verify_password(None, "anything at all")


async def test_every_change_is_audited_and_the_chain_verifies(db: Database) -> None:
    await _add(db)
    async with db.session() as session:
        await accounts.set_status(session, CLI, NOW, "105830016", "disabled", MAIL)
        await accounts.set_status(session, CLI, NOW, "105830016", "active", MAIL)
        await accounts.add_key(session, CLI, NOW, "105830016", _pubkey(), MAIL)
    async with db.read_session() as session:
        actions = [e.action for e in await audit.events(session)]
        assert actions == ["key.add", "account.enable", "account.disable", "account.add"]
        assert await audit_check.verify(session) == 4


async def test_unknown_account_is_not_found(db: Database) -> None:
    async with db.read_session() as session:
        with pytest.raises(NotFound, match="kein Konto mit IK 185830016"):
            await accounts.get_account(session, "185830016")
