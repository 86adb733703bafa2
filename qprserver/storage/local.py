"""Content-addressed blob store: each distinct content stored once, by SHA-256.

Layout under the root: ``blobs/ab/cd/<64 hex>`` and ``tmp/`` for uploads in
progress (same file system, so the final rename is atomic). A blob becomes visible
only after its temp file is fsynced, renamed into place and the folder fsynced, so
a killed server leaves temp files behind, never a half-written blob. Paths are
derived from validated hashes, never from user input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_TEMP_NAME = re.compile(r"upload-[0-9a-f]{24}\.part")
_CHUNK = 1024 * 1024
WRITE_BEHIND = 64 * 1024 * 1024  # bytes written between two write-behind flushes
_DIR_MODE = 0o700


class BlobNotFound(Exception):
    """No blob with this hash is stored."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its SHA-256 (lowercase hex) and its size in bytes."""

    sha256: str
    size: int


def _check_hash(sha256: str) -> str:
    # The hash becomes a path; anything but 64 lowercase hex digits could climb
    # out of the store (``../``) or alias another blob (upper case).
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """Create path and missing parents with mode 0700; fsync each new entry's parent.

    ``Path.mkdir(parents=True, mode=...)`` gives the mode to the last folder only,
    and a new folder is only durable once its parent's entry is.
    """
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir(mode=_DIR_MODE)
    except FileExistsError:
        return  # another writer won the race; its fsync covers the entry
    _fsync_dir(path.parent)


def _sha256_of_fd(fd: int) -> str:
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


class BlobWriter:
    """A blob being written; nothing is visible under a hash until ``finish``.

    Writes go straight to the file descriptor (no Python buffer), so the temp file
    on disk is always complete up to ``size`` and a content check can read
    ``temp_path`` before ``finish``. Sequential writes hash as they go. A write
    elsewhere (a client rewriting or sending out of order) marks the running hash
    stale; ``finish`` then hashes the file once more.

    Write-behind: every ``WRITE_BEHIND`` bytes, a thread flushes what is written so
    far (``fdatasync``) while the upload goes on, so the ``fsync`` in ``finish``
    has only the tail left to wait for instead of the whole file (about a second
    per GiB here). An error that flush meets is kept and raised by ``finish``: the
    kernel reports a write-back error once, and it must not get lost.
    """

    def __init__(self, store: FileBlobStore, temp_path: Path, *, resume: bool = False) -> None:
        self._store = store
        self.temp_path = temp_path
        # O_EXCL: a random name that already exists means something is wrong, not
        # a file to reuse; only a kept partial upload is reopened on purpose.
        flags = os.O_RDWR | os.O_CLOEXEC | (0 if resume else os.O_CREAT | os.O_EXCL)
        self._fd: int | None = os.open(temp_path, flags, 0o600)
        self._hash = hashlib.sha256()
        self._hash_valid = True
        self._hashed_to = 0
        self._size = 0
        if resume:
            self._size = os.fstat(self._fd).st_size
            # The bytes kept so far are hashed once more in ``finish``.
            self._hash_valid = self._size == 0
        self._behind: threading.Thread | None = None
        self._behind_mark = 0
        self._behind_error: OSError | None = None

    @property
    def path(self) -> Path:
        """The temp file (``tmp/upload-<random>.part``); same as ``temp_path``."""
        return self.temp_path

    @property
    def size(self) -> int:
        """Bytes in the file so far: the end of the furthest write."""
        return self._size

    @property
    def closed(self) -> bool:
        """True after ``finish`` or ``abort``."""
        return self._fd is None

    def write(self, offset: int, data: bytes) -> None:
        """Write data at offset: one blocking system call, no await, no hashing pass."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if offset < 0:
            raise ValueError("negative offset")
        if not data:
            return  # an empty write changes nothing on disk, so nothing here either
        view = memoryview(data)
        written = 0
        while written < len(view):
            # pwrite may write less than asked (signals, some file systems).
            written += os.pwrite(self._fd, view[written:], offset + written)
        end = offset + len(data)
        if self._hash_valid and offset == self._hashed_to:
            self._hash.update(data)
            self._hashed_to = end
        else:
            self._hash_valid = False
        self._size = max(self._size, end)
        if self._size - self._behind_mark >= WRITE_BEHIND and (
            self._behind is None or not self._behind.is_alive()
        ):
            self._behind_mark = self._size
            self._behind = threading.Thread(
                target=self._flush_behind, args=(self._fd,), name="write-behind", daemon=True
            )
            self._behind.start()

    def _flush_behind(self, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._behind_error = exc

    def _join_behind(self) -> None:
        """Wait for a write-behind flush: the file descriptor outlives it."""
        if self._behind is not None:
            self._behind.join()
            self._behind = None

    def truncate(self, size: int) -> None:
        """Cut the file to size bytes (a client's ftruncate); cheap, no data is read."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if size < 0:
            raise ValueError("negative size")
        os.ftruncate(self._fd, size)
        self._size = size
        if size == 0:
            self._hash = hashlib.sha256()
            self._hashed_to = 0
            self._hash_valid = True
        elif size < self._hashed_to:
            self._hash_valid = False

    def digest(self) -> str:
        """The SHA-256 of the bytes written so far, without finishing (blocking)."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if self._hash_valid and self._hashed_to == self._size:
            return self._hash.hexdigest()
        return _sha256_of_fd(self._fd)

    def detach(self) -> str:
        """Close the file but keep it in the temp folder, to resume later; its name.

        The file's time is renewed, so a sweep of temp files counts the keep time
        from now.
        """
        if self._fd is not None:
            self._join_behind()
            os.close(self._fd)
            self._fd = None
        os.utime(self.temp_path)
        return self.temp_path.name

    def read_head(self, n: int) -> bytes:
        """The first n bytes written so far (fewer if the file is shorter)."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        return os.pread(self._fd, n, 0)

    def finish(self) -> BlobInfo:
        """Make the content durable and visible under its hash; return the hash and size.

        Blocking (hashing, fsync); run it in a thread from async code. On failure the
        temp file is removed and the writer is closed.
        """
        fd = self._fd
        if fd is None:
            raise ValueError("blob writer is closed")
        self._fd = None
        try:
            self._join_behind()
            if self._behind_error is not None:
                raise self._behind_error
            if self._hash_valid and self._hashed_to == self._size:
                digest = self._hash.hexdigest()
            else:
                digest = _sha256_of_fd(fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.temp_path.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            self._store.place(self.temp_path, digest)
        except BaseException:
            self.temp_path.unlink(missing_ok=True)
            raise
        return BlobInfo(digest, self._size)

    def abort(self) -> None:
        """Throw the upload away; safe to call more than once and after ``finish``."""
        if self._fd is not None:
            self._join_behind()
            os.close(self._fd)
            self._fd = None
        self.temp_path.unlink(missing_ok=True)


class BlobStore(Protocol):
    """What the rest of qprserver needs of a blob store."""

    def begin_write(self) -> BlobWriter:
        """Start a new blob in a temp file."""
        ...

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this hash lives (whether or not it exists)."""
        ...

    def open(self, sha256: str) -> BinaryIO:
        """Open a stored blob for reading; BlobNotFound if absent."""
        ...

    def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        ...

    def size(self, sha256: str) -> int:
        """Size of a stored blob in bytes; BlobNotFound if absent."""
        ...

    def delete(self, sha256: str) -> bool:
        """Remove a blob; False if it was not there."""
        ...

    def iter_hashes(self) -> Iterator[str]:
        """Every stored hash, in no particular order."""
        ...

    def sweep_temp(
        self, older_than_seconds: float, now: float, spare: frozenset[str] = frozenset()
    ) -> int:
        """Remove temp files untouched for older_than_seconds, but none named in spare."""
        ...


class FileBlobStore:
    """Blobs as read-only files under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        for path in (self.blobs, self.tmp):
            _make_dirs(path)

    def begin_write(self) -> BlobWriter:
        """Start a new blob in a fresh temp file (``tmp/upload-<random>.part``)."""
        return BlobWriter(self, self.tmp / f"upload-{secrets.token_hex(12)}.part")

    def resume_write(self, temp_name: str) -> BlobWriter:
        """Reopen a kept temp file (``detach``) to write on; FileNotFoundError if gone."""
        if not _TEMP_NAME.fullmatch(temp_name):
            # The name comes from the database; it must not reach outside tmp/.
            raise ValueError("not a temp file name of this store")
        return BlobWriter(self, self.tmp / temp_name, resume=True)

    def remove_temp(self, temp_name: str) -> None:
        """Remove a kept temp file; nothing if it is gone already."""
        if _TEMP_NAME.fullmatch(temp_name):
            (self.tmp / temp_name).unlink(missing_ok=True)

    def new_temp_path(self, suffix: str = ".part") -> Path:
        """A fresh path in the temp folder, for files built elsewhere and adopted later."""
        return self.tmp / f"build-{secrets.token_hex(12)}{suffix}"

    def adopt(self, path: Path) -> BlobInfo:
        """Move a complete file from the temp folder into the store under its hash."""
        if path.parent != self.tmp:
            # Only the temp folder is known to be on the store's file system, and only
            # files the server built itself belong there.
            raise ValueError("only files in the store's temp folder can be adopted")
        with path.open("rb") as handle:
            fd = handle.fileno()
            digest = _sha256_of_fd(fd)
            size = os.fstat(fd).st_size
            os.fsync(fd)
        self.place(path, digest)
        return BlobInfo(digest, size)

    def place(self, temp_path: Path, sha256: str) -> None:
        """Rename a fsynced temp file into its content address; keep an existing copy.

        The caller vouches that sha256 is the file's hash.
        """
        target = self.path_for(sha256)
        try:
            # Stored once: the same content is already durable there. Touching it
            # restarts the grace period of the sweep of unreferenced blobs for the
            # reference the caller is about to commit (see ``delete_if_older``).
            os.utime(target)
        except FileNotFoundError:
            pass  # not stored yet, or collected a moment ago: store this copy
        else:
            temp_path.unlink()
            return
        _make_dirs(target.parent)
        # The mtime says when the blob was stored, not when its last byte arrived (a
        # resumed upload may end long after that): the sweep of unreferenced blobs
        # spares blobs younger than its grace period, whose rows may be on their way.
        os.utime(temp_path)
        # Blobs never change once stored; read-only guards against a stray writer.
        os.chmod(temp_path, 0o400)
        os.replace(temp_path, target)
        _fsync_dir(target.parent)

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this hash lives; ValueError for anything but a SHA-256."""
        h = _check_hash(sha256)
        return self.blobs / h[:2] / h[2:4] / h

    def open(self, sha256: str) -> BinaryIO:
        """Open a stored blob for reading; BlobNotFound if absent."""
        try:
            return self.path_for(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        return self.path_for(sha256).is_file()

    def size(self, sha256: str) -> int:
        """Size of a stored blob in bytes; BlobNotFound if absent."""
        try:
            return self.path_for(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def delete(self, sha256: str) -> bool:
        """Remove a blob durably; False if it was not there."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def delete_if_older(self, sha256: str, cutoff: float) -> bool:
        """Remove a blob stored (or touched by ``place``) before ``cutoff``, a Unix time.

        False when it is newer or gone. The blob is first moved aside and its mtime
        read again there: a ``place`` of the same content that touched it in between
        gets it back, and one that comes after the move finds no file and stores its
        own copy, so an upload about to commit never loses its blob to the sweep.
        """
        path = self.path_for(sha256)
        aside = self.tmp / f"collect-{secrets.token_hex(12)}"
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            os.rename(path, aside)
        except FileNotFoundError:
            return False  # another sweeper was faster
        if aside.stat().st_mtime >= cutoff:
            with contextlib.suppress(FileExistsError):  # a fresh copy took the place
                os.link(aside, path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        _fsync_dir(path.parent)
        return True

    def iter_hashes(self) -> Iterator[str]:
        """Every stored hash, walking ``blobs/ab/cd/``; stray files are skipped."""
        for first in _scan(self.blobs):
            if not (first.is_dir(follow_symlinks=False) and _HEX2.fullmatch(first.name)):
                continue
            for second in _scan(Path(first.path)):
                if not (second.is_dir(follow_symlinks=False) and _HEX2.fullmatch(second.name)):
                    continue
                prefix = first.name + second.name
                for entry in _scan(Path(second.path)):
                    name = entry.name
                    if (
                        _HEX64.fullmatch(name)
                        and name.startswith(prefix)
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield name

    def sweep_temp(
        self, older_than_seconds: float, now: float, spare: frozenset[str] = frozenset()
    ) -> int:
        """Remove temp files last written more than older_than_seconds before now.

        Run at start-up, where every temp file but the kept partial uploads (spare)
        is a leftover; later runs spare uploads still in progress because each write
        renews the file's mtime.
        """
        removed = 0
        for entry in _scan(self.tmp):
            try:
                if not entry.is_file(follow_symlinks=False) or entry.name in spare:
                    continue
                if now - entry.stat(follow_symlinks=False).st_mtime >= older_than_seconds:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # finished or aborted while we looked
        return removed


def _scan(path: Path) -> list[os.DirEntry[str]]:
    # A folder removed under us (or never created) simply has no entries.
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
