"""Content-addressed blob store: each distinct content stored once, by SHA-256.

Layout under the root: ``blobs/ab/cd/<64 hex>`` and ``tmp/`` for uploads in
progress (same file system, so the final rename is atomic). A blob becomes visible
only after its temp file is fsynced, renamed into place and the folder fsynced;
paths are derived from hashes, never from user input.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


class BlobNotFound(Exception):
    """No blob with this hash is stored."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    sha256: str
    size: int


def _check_hash(sha256: str) -> str:
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """A blob being written; nothing is visible until ``finish``.

    Sequential writes hash as they go. A write elsewhere (a client rewriting or
    sending out of order) marks the running hash stale; ``finish`` then hashes
    the file once more.
    """

    def __init__(self, store: FileBlobStore, temp_path: Path) -> None:
        self._store = store
        self.temp_path = temp_path
        fd = os.open(temp_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._fd: int | None = fd
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._end = 0
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        """Write data at offset (one system call)."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if offset < 0:
            raise ValueError("negative offset")
        os.pwrite(self._fd, data, offset)
        end = offset + len(data)
        if self._hash is not None and offset == self._end:
            self._hash.update(data)
            self._end = end
        elif data:
            self._hash = None
        self._size = max(self._size, end)

    def _digest(self) -> str:
        assert self._fd is not None
        if self._hash is not None and self._end == self._size:
            return self._hash.hexdigest()
        h = hashlib.sha256()
        offset = 0
        while chunk := os.pread(self._fd, _CHUNK, offset):
            h.update(chunk)
            offset += len(chunk)
        return h.hexdigest()

    def finish(self) -> BlobInfo:
        """Make the content durable and visible under its hash; return the hash and size."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        os.ftruncate(self._fd, self._size)
        digest = self._digest()
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        target = self._store.path_for(digest)
        if target.exists():
            # Stored once: the same content is already durable there. Touch it so the
            # garbage collector's grace period covers the reference about to be written.
            self.temp_path.unlink(missing_ok=True)
            os.utime(target)
            return BlobInfo(digest, self._size)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.temp_path, 0o400)
        os.replace(self.temp_path, target)
        _fsync_dir(target.parent)
        return BlobInfo(digest, self._size)

    def abort(self) -> None:
        """Throw the upload away; safe to call more than once."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.temp_path.unlink(missing_ok=True)


class BlobStore(Protocol):
    """What the rest of qprserver needs of a blob store."""

    def begin_write(self) -> BlobWriter: ...

    def path_for(self, sha256: str) -> Path: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> bool: ...


class FileBlobStore:
    """Blobs as files under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        for path in (root, self.blobs, self.tmp):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def begin_write(self) -> BlobWriter:
        return BlobWriter(self, self.tmp / f"upload-{secrets.token_hex(12)}.part")

    def new_temp_path(self, suffix: str = ".part") -> Path:
        """A fresh path in the temp folder, for files built elsewhere and adopted later."""
        return self.tmp / f"build-{secrets.token_hex(12)}{suffix}"

    def adopt(self, path: Path) -> BlobInfo:
        """Move a complete file from the temp folder into the store under its hash."""
        if path.parent != self.tmp:
            raise ValueError("only files in the store's temp folder can be adopted")
        h = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                h.update(chunk)
            os.fsync(handle.fileno())
        digest, size = h.hexdigest(), path.stat().st_size
        target = self.path_for(digest)
        if target.exists():
            path.unlink()
            os.utime(target)
            return BlobInfo(digest, size)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o400)
        os.replace(path, target)
        _fsync_dir(target.parent)
        return BlobInfo(digest, size)

    def path_for(self, sha256: str) -> Path:
        h = _check_hash(sha256)
        return self.blobs / h[:2] / h[2:4] / h

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path_for(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).exists()

    def size(self, sha256: str) -> int:
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def delete(self, sha256: str) -> bool:
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def iter_hashes(self) -> Iterator[str]:
        for path in self.blobs.glob("*/*/*"):
            if _HEX64.fullmatch(path.name):
                yield path.name

    def sweep_temp(self, older_than_seconds: float, now: float) -> int:
        """Remove temp files last written more than older_than_seconds ago."""
        removed = 0
        for path in self.tmp.iterdir():
            try:
                if now - path.stat().st_mtime >= older_than_seconds:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
