"""The audit key and the signed checkpoint of the audit chain's head.

The key (``security.audit_key``, created by ``init``, mode 0600) turns the chain's
hashes into HMACs: with write access to the database alone a row can no longer be
edited and the chain recomputed. Removing rows from the end (or all of them) leaves
a chain that is still consistent, so the heads are also kept outside the database:
``security.audit_checkpoint`` holds the id and hash of the newest verified row of
every lane (``audit/chain.py``), when it was taken and from which row on the chain
is keyed, signed with the same key. ``audit verify`` and the ``audit-checkpoint``
job check the chain against it and move it forward; a lane shorter than in the
checkpoint, or one whose row at the checkpoint has another hash, fails.
Checkpoints from before lanes (one head, the rows' lane 0) are read and replaced.

Databases from before the key: ``init`` creates the key and the first checkpoint
together, with ``keyed_from`` one past the head of that moment. The older rows keep
their plain SHA-256 and are verified that way; the checkpoint's signature covers
their last hash, and every keyed row chains on it, so they are protected from then
on as well. Stop ``serve`` while running ``init`` for this, so that no row is
written without the key after the checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit.chain import Head
from qprserver.audit.check import check_chain, lane_heads, one_snapshot
from qprserver.db.engine import Database
from qprserver.db.models import AuditEvent
from qprserver.errors import AuditChainBroken, ConfigError

KEY_BYTES = 32


def ensure_key(path: Path) -> bool:
    """Create the audit key file (mode 0600) unless it exists; True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: two inits racing never overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return True


def load_key(path: Path) -> bytes | None:
    """The audit key; None when the file does not exist (an instance from before it)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: audit key unreadable: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"{path}: not an audit key (hex)") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"{path}: audit key shorter than {KEY_BYTES} bytes")
    return key


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every lane's head as last verified, and where the key starts to apply."""

    heads: Mapping[int, Head]
    at: datetime
    keyed_from: int

    def _payload(self) -> bytes:
        heads = [[lane, head.id, head.hash] for lane, head in sorted(self.heads.items())]
        return json.dumps(
            [heads, self.at.isoformat(), self.keyed_from], separators=(",", ":")
        ).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(
            key, b"qprserver-audit-checkpoint-lanes\0" + self._payload(), hashlib.sha256
        ).hexdigest()


def _single_head_signature(key: bytes, head: Head, at: str, keyed_from: int) -> str:
    """The signature of a checkpoint from before lanes: one head."""
    payload = json.dumps([head.id, head.hash, at, keyed_from], separators=(",", ":")).encode()
    return hmac.new(key, b"qprserver-audit-checkpoint\0" + payload, hashlib.sha256).hexdigest()


def _parse(data: Any, key: bytes) -> tuple[Checkpoint, str, str]:
    """The checkpoint in a file's JSON, its signature, and the one it must have."""
    at = datetime.fromisoformat(data["at"])
    keyed_from = int(data["keyed_from"])
    signature = str(data["mac"])
    if "heads" not in data:  # from before lanes: lane 0's head alone
        head = Head(int(data["id"]), str(data["hash"]))
        heads = {0: head} if head.id > 0 else {}
        expected = _single_head_signature(key, head, data["at"], keyed_from)
        return Checkpoint(heads, at, keyed_from), signature, expected
    heads = {int(item["lane"]): Head(int(item["id"]), str(item["hash"])) for item in data["heads"]}
    checkpoint = Checkpoint(heads, at, keyed_from)
    return checkpoint, signature, checkpoint.signature(key)


def read_checkpoint(path: Path, key: bytes) -> Checkpoint | None:
    """The checkpoint at path; None when there is none; AuditChainBroken when forged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise AuditChainBroken(
            f"Prüfpunkt {path} unlesbar / audit checkpoint unreadable: {exc}"
        ) from None
    try:
        checkpoint, signature, expected = _parse(data, key)
    except (KeyError, TypeError, ValueError):
        raise AuditChainBroken(
            f"Prüfpunkt {path} unvollständig / audit checkpoint incomplete"
        ) from None
    if not hmac.compare_digest(expected, signature):
        raise AuditChainBroken(
            f"Prüfpunkt {path} nicht gültig signiert / audit checkpoint signature invalid"
        )
    return checkpoint


def write_checkpoint(path: Path, key: bytes, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        "heads": [
            {"lane": lane, "id": head.id, "hash": head.hash}
            for lane, head in sorted(checkpoint.heads.items())
        ],
        "at": checkpoint.at.isoformat(),
        "keyed_from": checkpoint.keyed_from,
        "mac": checkpoint.signature(key),
    }
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _exists(path: Path) -> bool:
    return path.exists()


async def start_keyed(db: Database, key_path: Path, checkpoint_path: Path, now: datetime) -> bool:
    """At ``init``: the first checkpoint, keyed from the row after today's head.

    Nothing happens when a checkpoint exists; True when one was written.
    """
    key = load_key(key_path)
    if key is None or _exists(checkpoint_path):
        return False
    async with db.read_session() as session:
        heads = await lane_heads(session)
    newest = max((head.id for head in heads.values()), default=0)
    write_checkpoint(checkpoint_path, key, Checkpoint(heads, now, newest + 1))
    return True


async def verify_and_checkpoint(
    db: Database, key_path: Path, checkpoint_path: Path, now: datetime, *, full: bool
) -> tuple[int, dict[int, Head]]:
    """Check the chain against the checkpoint, then move the checkpoint to its heads.

    ``full``: every row (``audit verify``); otherwise only those after the checkpoint
    (the periodic job). Returns the rows checked and every lane's head. Without a
    key the chain is checked the old way and no checkpoint is kept.
    """
    key = load_key(key_path)
    if key is None:
        async with db.read_session() as session:
            await one_snapshot(session)
            return await check_chain(session)
    checkpoint = read_checkpoint(checkpoint_path, key)
    if checkpoint is None:
        raise AuditChainBroken(
            f"Prüfpunkt {checkpoint_path} fehlt, Kürzung des Audit-Logs nicht prüfbar "
            f"/ audit checkpoint missing: truncation cannot be ruled out"
        )
    async with db.read_session() as session:
        await one_snapshot(session)
        _not_shorter(checkpoint, await lane_heads(session))
        try:
            count, heads = await check_chain(
                session,
                key,
                keyed_from=checkpoint.keyed_from,
                start=None if full else checkpoint.heads,
            )
        except AuditChainBroken as exc:
            raise AuditChainBroken(f"Audit-Log verändert / audit log altered: {exc}") from None
        if full:
            await _same_at_checkpoint(session, checkpoint)
    write_checkpoint(checkpoint_path, key, Checkpoint(heads, now, checkpoint.keyed_from))
    return count, heads


def _not_shorter(checkpoint: Checkpoint, heads: Mapping[int, Head]) -> None:
    for lane, then in sorted(checkpoint.heads.items()):
        now = heads.get(lane, Head(0, ""))
        if now.id < then.id:
            raise AuditChainBroken(
                f"Audit-Log kürzer als sein Prüfpunkt vom {checkpoint.at:%Y-%m-%d %H:%M} "
                f"(Spur {lane}: Ereignis {then.id}, jetzt {now.id}) / audit log shorter than "
                f"its checkpoint: rows were removed"
            )


async def _same_at_checkpoint(session: AsyncSession, checkpoint: Checkpoint) -> None:
    for lane, head in sorted(checkpoint.heads.items()):
        found = await session.scalar(
            select(AuditEvent.hash).where(AuditEvent.id == head.id, AuditEvent.lane == lane)
        )
        if found != head.hash:
            raise AuditChainBroken(
                f"Audit-Log weicht von seinem Prüfpunkt ab (Ereignis {head.id}) "
                f"/ audit log diverges from its checkpoint"
            )
