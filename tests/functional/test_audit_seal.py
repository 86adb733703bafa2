"""The keyed audit chain and its checkpoint, through the real CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit import chain as audit
from qprserver.config import load_config
from qprserver.db.models import AuditEvent
from tests.functional.conftest import Instance

IK = "260100023"


def _events(instance: Instance) -> None:
    instance.ok("account", "add", IK, "--name", "Klinikum", "--role", "depositor")
    instance.ok("account", "disable", IK)
    instance.ok("account", "enable", IK)


def _rehash(
    instance: Instance, key: bytes | None = None, *, one_lane: bool = False
) -> tuple[int, str]:
    """Chain every row anew in its lane: with key, or the way the chain was made before
    the key. one_lane: all rows in lane 0, as before lanes. The newest row's id and hash."""

    async def work(session: AsyncSession) -> tuple[int, str]:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        for row in rows:  # prev_hash is unique: out of the way first
            row.prev_hash = f"{row.id:064x}"
        await session.flush()
        prev: dict[int, str] = {}
        for row in rows:
            if one_lane:
                row.lane = 0
            row.prev_hash = prev.get(row.lane, audit.genesis(row.lane))
            row.hash = prev[row.lane] = audit.stored_row_hash(row, key)
            await session.flush()
        return rows[-1].id, rows[-1].hash

    return instance.in_session(work)


def _newest(checkpoint: Path) -> int:
    """The newest row a checkpoint covers, over all its lanes."""
    return max((head["id"] for head in json.loads(checkpoint.read_text())["heads"]), default=0)


def _verify_fails(instance: Instance) -> str:
    result = instance.run("audit", "verify")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_init_creates_the_audit_key_once_readable_only_by_its_owner(instance: Instance) -> None:
    security = load_config(instance.config).security
    key = security.audit_key.read_bytes()
    assert stat.S_IMODE(security.audit_key.stat().st_mode) == 0o600
    assert len(bytes.fromhex(key.decode().strip())) == 32
    checkpoint = json.loads(security.audit_checkpoint.read_text())
    assert checkpoint["heads"] == [] and checkpoint["keyed_from"] == 1
    instance.ok("init")
    assert security.audit_key.read_bytes() == key


def test_normal_operation_verifies_and_moves_the_checkpoint(instance: Instance) -> None:
    _events(instance)
    assert "intact: 3 events" in instance.ok("audit", "verify")
    instance.ok("account", "disable", IK)
    instance.ok("jobs", "run", "audit-checkpoint")
    checkpoint = load_config(instance.config).security.audit_checkpoint
    assert _newest(checkpoint) == 4
    assert "intact: 4 events" in instance.ok("audit", "verify")


def test_a_row_edited_and_rehashed_without_the_key_fails_verification(
    instance: Instance,
) -> None:
    _events(instance)
    instance.sql("UPDATE audit_events SET actor = 'someone-else' WHERE action = 'account.add'")
    _rehash(instance)
    assert "content does not match its hash" in _verify_fails(instance)


def test_deleting_every_audit_row_fails_verification(instance: Instance) -> None:
    _events(instance)
    instance.ok("audit", "verify")
    instance.sql("DELETE FROM audit_events")
    assert "kürzer als sein Prüfpunkt" in _verify_fails(instance)


def test_deleting_the_newest_rows_fails_verification_after_the_checkpoint_job(
    instance: Instance,
) -> None:
    _events(instance)
    instance.ok("jobs", "run", "audit-checkpoint")
    instance.sql("DELETE FROM audit_events WHERE id > 1")
    assert "shorter than its checkpoint" in _verify_fails(instance)


def test_newest_rows_replaced_by_others_fail_verification(instance: Instance) -> None:
    _events(instance)
    instance.ok("audit", "verify")
    instance.sql("DELETE FROM audit_events WHERE id = 3")
    instance.ok("account", "disable", IK)  # a new, validly keyed row 3 or 4
    message = _verify_fails(instance)
    assert "weicht von seinem Prüfpunkt ab" in message or "kürzer" in message


def test_a_removed_checkpoint_fails_verification(instance: Instance) -> None:
    _events(instance)
    load_config(instance.config).security.audit_checkpoint.unlink()
    assert "Prüfpunkt" in _verify_fails(instance)


def test_rows_from_before_the_key_verify_the_old_way_and_are_sealed_from_then_on(
    instance: Instance,
) -> None:
    security = load_config(instance.config).security
    security.audit_key.unlink()  # an instance from before the audit key
    security.audit_checkpoint.unlink()
    _events(instance)
    assert "intact: 3 events" in instance.ok("audit", "verify")
    assert "audit checkpoint created" in instance.ok("init")
    assert json.loads(security.audit_checkpoint.read_text())["keyed_from"] == 4
    instance.ok("account", "disable", IK)
    assert "intact: 4 events" in instance.ok("audit", "verify")
    # An old row edited and the whole chain rehashed the old way: the keyed row after
    # them cannot be rehashed without the key.
    instance.sql("UPDATE audit_events SET actor = 'someone-else' WHERE id = 1")
    _rehash(instance)
    assert "Audit-Log verändert" in _verify_fails(instance)


def test_a_checkpoint_from_before_lanes_is_checked_and_replaced(instance: Instance) -> None:
    security = load_config(instance.config).security
    key = bytes.fromhex(security.audit_key.read_text().strip())
    _events(instance)
    # The rows as a database from before lanes has them:
    head_id, head_hash = _rehash(instance, key, one_lane=True)

    def single_head(head_hash: str) -> str:
        """A checkpoint as written before lanes: one head, signed in that format."""
        at = "2026-11-28T09:00:00+00:00"
        payload = json.dumps([head_id, head_hash, at, 1], separators=(",", ":")).encode()
        mac = hmac.new(key, b"qprserver-audit-checkpoint\0" + payload, hashlib.sha256)
        body = {"id": head_id, "hash": head_hash, "at": at, "keyed_from": 1}
        return json.dumps(body | {"mac": mac.hexdigest()})

    security.audit_checkpoint.write_text(single_head(head_hash))
    instance.ok("account", "disable", IK)
    assert "intact: 4 events" in instance.ok("audit", "verify")
    assert _newest(security.audit_checkpoint) == 4
    security.audit_checkpoint.write_text(single_head("f" * 64))
    assert "weicht von seinem Prüfpunkt ab" in _verify_fails(instance)
    security.audit_checkpoint.write_text(
        single_head(head_hash).replace(f'"id": {head_id}', f'"id": {head_id + 1}')
    )
    assert "nicht gültig signiert" in _verify_fails(instance)
