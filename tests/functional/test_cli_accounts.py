from __future__ import annotations

import asyncio
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import text

from qprserver.config import load_config
from qprserver.db.engine import Database
from tests.functional.conftest import Instance


def _pubkey_file(tmp_path: Path, key: object, name: str = "id.pub") -> Path:
    path = tmp_path / name
    path.write_bytes(
        key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b" operator@example\n"
    )
    return path


def test_init_creates_private_data_folder_and_host_keys_and_is_idempotent(
    instance: Instance,
) -> None:
    data = instance.root / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    ed = instance.root / "keys" / "ssh_host_ed25519_key"
    rsa_key = instance.root / "keys" / "ssh_host_rsa_key"
    assert stat.S_IMODE(ed.stat().st_mode) == 0o600
    assert rsa_key.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (instance.root / "keys" / "ssh_host_rsa_key.pub").read_text().startswith("ssh-rsa ")
    before = ed.read_bytes()
    out = instance.ok("init")
    assert "host key kept" in out
    assert ed.read_bytes() == before
    assert "matches models" in instance.ok("db", "check")


def test_invalid_ik_fails_with_check_digit_message_and_adds_nothing(instance: Instance) -> None:
    result = instance.run("account", "add", "123456789", "--name", "X", "--role", "recipient")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error: IK 123456789 ungültig: Prüfziffer 0 erwartet, 9 gefunden"
    ]
    assert instance.json("account", "list") == []


def test_account_lifecycle_through_the_cli(instance: Instance, tmp_path: Path) -> None:
    out = instance.ok(
        "account",
        "add",
        "105830016",
        "--name",
        "AOK Landesverband",
        "--email",
        "lv@example.org",
        "--role",
        "recipient",
    )
    assert "105830016 created" in out
    accounts = instance.json("account", "list")
    assert [a["ik"] for a in accounts] == ["105830016"]
    # Region 58 is no Land code: not an error, just no Land.
    assert accounts[0]["land"] is None and accounts[0]["roles"] == ["recipient"]

    dup = instance.run("account", "add", "105830016", "--name", "X", "--role", "recipient")
    assert dup.returncode == 1 and "existiert bereits" in dup.stderr

    key_file = _pubkey_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    assert "added" in instance.ok("account", "key", "add", "105830016", str(key_file))
    keys = instance.json("account", "key", "list", "105830016")
    assert len(keys) == 1 and keys[0]["algorithm"] == "ssh-ed25519"

    weak = _pubkey_file(tmp_path, rsa.generate_private_key(65537, 1024), "weak.pub")
    result = instance.run("account", "key", "add", "105830016", str(weak))
    assert result.returncode == 1 and "zu schwach" in result.stderr

    missing = instance.run("account", "key", "add", "105830016", str(tmp_path / "nope.pub"))
    assert missing.returncode == 1 and "cannot read key file" in missing.stderr

    instance.ok("account", "password", "105830016", stdin="a long enough secret\n")
    shown = instance.json("account", "show", "105830016")
    assert shown["password"] is True

    instance.ok("account", "disable", "105830016")
    assert instance.json("account", "show", "105830016")["status"] == "disabled"
    instance.ok("account", "enable", "105830016")

    instance.ok("account", "key", "remove", "105830016", keys[0]["fingerprint"])
    assert instance.json("account", "key", "list", "105830016") == []

    events = instance.json("audit", "list", "--account", "105830016")
    assert [e["action"] for e in events] == [
        "key.remove",
        "account.enable",
        "account.disable",
        "password.set",
        "key.add",
        "account.add",
    ]
    assert "intact: 6 events" in instance.ok("audit", "verify")
    # The secret is never written to the audit log.
    assert "a long enough secret" not in json.dumps(events)


def test_unknown_account_fails_with_one_line(instance: Instance) -> None:
    result = instance.run("account", "disable", "185830016")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: kein Konto mit IK 185830016"


def test_audit_verify_fails_after_a_row_is_edited_by_hand(instance: Instance) -> None:
    instance.ok("account", "add", "260100023", "--name", "Klinikum", "--role", "depositor")
    instance.ok("account", "disable", "260100023")
    assert "intact: 2 events" in instance.ok("audit", "verify")

    async def tamper() -> None:
        db = Database(load_config(instance.config).database)
        try:
            async with db.session() as session:
                await session.execute(
                    text(
                        "UPDATE audit_events SET actor = 'someone-else' "
                        "WHERE action = 'account.add'"
                    )
                )
        finally:
            await db.dispose()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, tamper()).result()
    result = instance.run("audit", "verify")
    assert result.returncode == 1
    assert "content does not match its hash" in result.stderr


def test_malformed_config_stops_with_the_key_named(instance: Instance) -> None:
    instance.config.write_text(instance.config.read_text() + "\n[mail]\nsmtp_prot = 25\n")
    result = instance.run("account", "list")
    assert result.returncode == 1
    assert "mail.smtp_prot: unknown key" in result.stderr


def test_commands_refuse_an_unmigrated_database(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "empty.db"}"\n')
    inst = Instance(tmp_path, config)
    result = inst.run("account", "list")
    assert result.returncode == 1
    assert "qprserver db upgrade" in result.stderr


ACCOUNT_KEYS = {
    "ik",
    "name",
    "email",
    "roles",
    "land",
    "status",
    "notify",
    "bundles",
    "second_factor",
    "allowed_networks",
    "max_sessions",
    "expires_at",
    "keys",
    "password",
    "created_at",
    "updated_at",
}


def test_account_json_shapes_and_refusals_of_keys_passwords_and_audit(
    instance: Instance, tmp_path: Path
) -> None:
    added = instance.json(
        "account", "add", "190500027", "--name", "MD", "--role", "depositor", "--land", "nw"
    )
    assert set(added) >= ACCOUNT_KEYS and added["land"] == "NW" and added["keys"] == []
    instance.ok("account", "add", "105830016", "--name", "LV", "--role", "recipient")
    assert instance.json("account", "show", "190500027") == added
    assert [a["ik"] for a in instance.json("account", "list", "--role", "recipient")] == [
        "105830016"
    ]
    assert "105830016" in instance.ok("account", "list")
    assert "ik          190500027" in instance.ok("account", "show", "190500027")

    key_file = _pubkey_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    instance.ok("account", "key", "add", "190500027", "-", stdin=key_file.read_text())
    (key,) = instance.json("account", "key", "list", "190500027")
    assert set(key) >= {"fingerprint", "algorithm", "bits", "comment", "created_at"}
    # `account show` lists keys shorter (no bits, no time): kept, scripts read both.
    assert instance.json("account", "show", "190500027")["keys"] == [
        {k: key[k] for k in ("fingerprint", "algorithm", "comment")}
    ]
    assert key["fingerprint"] in instance.ok("account", "key", "list", "190500027")

    assert instance.fails("account", "show", "185830016") == "Error: kein Konto mit IK 185830016"
    assert instance.fails("account", "key", "list", "1234") == (
        "Error: IK '1234' ungültig: 9 Ziffern erwartet, 4 gefunden"
    )
    assert instance.fails("account", "key", "remove", "190500027", "SHA256:nope") == (
        "Error: Konto 190500027 hat keinen Schlüssel SHA256:nope"
    )
    assert instance.fails("account", "password", "190500027", stdin="kurz\n") == (
        "Error: Passwort zu kurz: mindestens 12 Zeichen verlangt"
    )
    assert instance.fails("audit", "list", "--account", "123") == (
        "Error: IK '123' ungültig: 9 Ziffern erwartet, 3 gefunden"
    )
    events = instance.json("audit", "list", "--account", "190500027")
    assert all(
        set(e) >= {"id", "at", "actor", "action", "target", "source", "details", "hash"}
        for e in events
    )
    assert [e["action"] for e in events] == ["key.add", "account.add"]
    assert "key.add" in instance.ok("audit", "list")
