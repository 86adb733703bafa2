"""The audit key and the signed checkpoint of the audit chain's head.

The key (``security.audit_key``, created by ``init``, mode 0600) turns the chain's
hashes into HMACs: with write access to the database alone a row can no longer be
edited and the chain recomputed. Removing rows from the end (or all of them) leaves
a chain that is still consistent, so the head is also kept outside the database:
``security.audit_checkpoint`` holds the id and hash of the newest verified row,
when it was taken and from which row on the chain is keyed, signed with the same
key. ``audit verify`` and the ``audit-checkpoint`` job check the chain against it
and move it forward; a chain shorter than the checkpoint, or one whose row at the
checkpoint has another hash, fails.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.audit.chain import GENESIS, Head, check_chain
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
    """The head of the chain as last verified, and where the key starts to apply."""

    head: Head
    at: datetime
    keyed_from: int

    def _payload(self) -> bytes:
        return json.dumps(
            [self.head.id, self.head.hash, self.at.isoformat(), self.keyed_from],
            separators=(",", ":"),
        ).encode()

    def signature(self, key: bytes) -> str:
        return hmac.new(
            key, b"qprserver-audit-checkpoint\0" + self._payload(), hashlib.sha256
        ).hexdigest()


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
        checkpoint = Checkpoint(
            Head(int(data["id"]), str(data["hash"])),
            datetime.fromisoformat(data["at"]),
            int(data["keyed_from"]),
        )
        signature = str(data["mac"])
    except (KeyError, TypeError, ValueError):
        raise AuditChainBroken(
            f"Prüfpunkt {path} unvollständig / audit checkpoint incomplete"
        ) from None
    if not hmac.compare_digest(checkpoint.signature(key), signature):
        raise AuditChainBroken(
            f"Prüfpunkt {path} nicht gültig signiert / audit checkpoint signature invalid"
        )
    return checkpoint


def write_checkpoint(path: Path, key: bytes, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {
        "id": checkpoint.head.id,
        "hash": checkpoint.head.hash,
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


async def _head(session: AsyncSession) -> Head:
    row = (
        await session.execute(
            select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
        )
    ).first()
    return Head(row[0], row[1]) if row is not None else Head(0, GENESIS)


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
        head = await _head(session)
    write_checkpoint(checkpoint_path, key, Checkpoint(head, now, head.id + 1))
    return True


async def verify_and_checkpoint(
    db: Database, key_path: Path, checkpoint_path: Path, now: datetime, *, full: bool
) -> tuple[int, Head]:
    """Check the chain against the checkpoint, then move the checkpoint to its head.

    ``full``: every row (``audit verify``); otherwise only those after the checkpoint
    (the periodic job). Returns the rows checked and the head. Without a key the
    chain is checked the old way and no checkpoint is kept.
    """
    key = load_key(key_path)
    if key is None:
        async with db.read_session() as session:
            return await check_chain(session)
    checkpoint = read_checkpoint(checkpoint_path, key)
    if checkpoint is None:
        raise AuditChainBroken(
            f"Prüfpunkt {checkpoint_path} fehlt, Kürzung des Audit-Logs nicht prüfbar "
            f"/ audit checkpoint missing: truncation cannot be ruled out"
        )
    async with db.read_session() as session:
        head = await _head(session)
        if head.id < checkpoint.head.id:
            raise AuditChainBroken(
                f"Audit-Log kürzer als sein Prüfpunkt vom {checkpoint.at:%Y-%m-%d %H:%M} "
                f"(Ereignis {checkpoint.head.id}, jetzt {head.id}) / audit log shorter than "
                f"its checkpoint: rows were removed"
            )
        try:
            count, head = await check_chain(
                session,
                key,
                keyed_from=checkpoint.keyed_from,
                start=None if full else checkpoint.head,
            )
        except AuditChainBroken as exc:
            raise AuditChainBroken(f"Audit-Log verändert / audit log altered: {exc}") from None
        if full:
            await _same_at_checkpoint(session, checkpoint)
    write_checkpoint(checkpoint_path, key, Checkpoint(head, now, checkpoint.keyed_from))
    return count, head


async def _same_at_checkpoint(session: AsyncSession, checkpoint: Checkpoint) -> None:
    if checkpoint.head.id == 0:
        return
    found = await session.scalar(select(AuditEvent.hash).where(AuditEvent.id == checkpoint.head.id))
    if found != checkpoint.head.hash:
        raise AuditChainBroken(
            f"Audit-Log weicht von seinem Prüfpunkt ab (Ereignis {checkpoint.head.id}) "
            f"/ audit log diverges from its checkpoint"
        )
