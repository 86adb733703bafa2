"""This node's spool: uploads in progress and kept partial uploads, one folder per node.

Layout: ``<data_dir>/spool/<node id>/`` (``server.node_id``, by default the host's
name). Nodes sharing a data folder each write and sweep only their own folder, so
the start of one node (which clears what a killed run of *it* left) never touches
another node's uploads in progress. The spool sits on the data folder's file system,
so a finished upload is renamed into the local blob store atomically.

A file's temp name is ``<node id>/upload-<random>.part``: kept partial uploads are
recorded by it in the database, so a restart of the node finds them again, and
another node that resumes one (after a reconnect) first renames the file into its
own spool. Names without a node (``upload-<random>.part``) are those kept by an
older version in ``<data_dir>/tmp/``; they are still resumed, and the periodic sweep
removes that folder's stale files.

``SpoolWriter`` is the writer of the ``BlobWriter`` Protocol for every backend: it
writes, hashes while writing and fsyncs; what ``finish`` does then with the file
(rename into place, or send to an object store) is the backend's ``commit``.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from qprserver.storage.base import BlobInfo
from qprserver.storage.files import make_dirs, scan, sha256_of_fd

# 43 characters: a temp name (node, "/", 36 more) fits the 80 the database keeps.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,42}")
_UPLOAD = r"upload-[0-9a-f]{24}\.part"
_TEMP_NAME = re.compile(rf"(?:(?P<node>{NODE_ID.pattern})/)?(?P<file>{_UPLOAD})")
WRITE_BEHIND = 64 * 1024 * 1024  # bytes written between two write-behind flushes
GATHER = 256 * 1024  # consecutive bytes written with one pwritev
GATHER_PARTS = 64  # at most this many writes per pwritev (well under IOV_MAX)

# What ``finish`` does with the fsynced spool file and its hash: make it the blob.
Commit = Callable[[Path, str], None]


def check_node_id(value: str) -> str:
    """A node id that is a safe folder name; ValueError for anything else."""
    if not isinstance(value, str) or not NODE_ID.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            "must be 1 to 43 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def default_node_id() -> str:
    """The host's name up to the first dot (``server.node_id``'s default)."""
    return socket.gethostname().split(".", 1)[0] or "localhost"


class Spool:
    """The spool folder of one node under a data folder."""

    def __init__(self, data_dir: Path, node_id: str) -> None:
        self.node_id = check_node_id(node_id)
        self.folder = data_dir / "spool" / node_id
        self.legacy = data_dir / "tmp"
        make_dirs(self.folder)

    def new_writer(self, commit: Commit) -> SpoolWriter:
        """A writer on a fresh file of this node's spool."""
        path = self.folder / f"upload-{secrets.token_hex(12)}.part"
        return SpoolWriter(path, self.temp_name(path), commit)

    def temp_name(self, path: Path) -> str:
        """The name a file of this spool is kept (and resumed) by."""
        return f"{self.node_id}/{path.name}"

    def locate(self, temp_name: str) -> Path:
        """Where a kept file is; ValueError for a name this spool never gives."""
        # The name comes from the database; it must not reach outside the spool.
        match = _TEMP_NAME.fullmatch(temp_name) if isinstance(temp_name, str) else None
        if match is None or match["node"] in (".", ".."):
            raise ValueError("not a temp name of this spool")
        node = match["node"]
        folder = self.legacy if node is None else self.folder.parent / node
        return folder / match["file"]

    def resume_writer(self, temp_name: str, commit: Commit) -> SpoolWriter:
        """Reopen a kept file to write on, moved into this node's spool if it was
        another's; FileNotFoundError if it is gone."""
        path = self.locate(temp_name)
        own = self.folder / path.name
        if path != own:
            os.rename(path, own)  # same file system; FileNotFoundError if swept meanwhile
        return SpoolWriter(own, self.temp_name(own), commit, resume=True)

    def remove(self, temp_name: str) -> None:
        """Remove a kept file (of any node: the database row was its owner)."""
        try:
            path = self.locate(temp_name)
        except ValueError:
            return
        path.unlink(missing_ok=True)

    def aside(self) -> Path:
        """A fresh path in this spool to move a file aside to (never resumed or kept)."""
        return self.folder / f"collect-{secrets.token_hex(12)}"

    def sweep(self, older_than_seconds: float, now: float, spare: frozenset[str]) -> int:
        """Remove files of this node's spool last written more than older_than_seconds
        before now, but none whose temp name is in spare; how many were removed.

        At start-up (0 seconds) everything but the kept partial uploads is a leftover
        of this node's last run, and other nodes' folders are not looked at: their
        uploads are in progress. The periodic sweep (older_than_seconds > 0, well
        above the idle timeout) spares uploads in progress, because each write renews
        the file's mtime, so it also clears stale files of the other nodes' folders
        on a shared data folder (a node that died and never came back leaves its
        abandoned uploads there) and of ``tmp/``, where no current version writes.
        """
        removed = self._sweep(self.folder, self.node_id + "/", older_than_seconds, now, spare)
        if older_than_seconds > 0:
            removed += self._sweep(self.legacy, "", older_than_seconds, now, spare)
            for entry in scan(self.folder.parent):
                if (
                    entry.name != self.node_id
                    and NODE_ID.fullmatch(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                ):
                    folder = Path(entry.path)
                    removed += self._sweep(folder, entry.name + "/", older_than_seconds, now, spare)
        return removed

    @staticmethod
    def _sweep(
        folder: Path, prefix: str, older_than_seconds: float, now: float, spare: frozenset[str]
    ) -> int:
        removed = 0
        for entry in scan(folder):
            try:
                if not entry.is_file(follow_symlinks=False) or prefix + entry.name in spare:
                    continue
                if now - entry.stat(follow_symlinks=False).st_mtime >= older_than_seconds:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # finished or aborted while we looked
        return removed


class SpoolWriter:
    """A blob being written into a spool file; nothing is visible until ``finish``.

    Consecutive writes are gathered, by reference, up to ``GATHER`` bytes and
    written with one ``pwritev``; a write elsewhere writes what is gathered first.
    Clients on pkg/sftp or paramiko write 32 KiB per request (a system call each
    cost 0.36-0.38 s of CPU per GiB here, one per 256 KiB 0.25 s); OpenSSH's
    ``sftp`` writes 255 KiB per request, two of which now share a call. Everything that looks at the
    file (``read_head``, ``open_written``, ``digest``, ``truncate``, ``detach``,
    ``finish``) writes what is gathered first, so to a reader the file is always
    complete up to ``size``. A failed write is raised by the write that sends it to
    the file, or by ``finish``; either way the upload fails. Sequential writes
    hash as they go. A write elsewhere (a client rewriting or sending out of
    order) marks the running hash stale; ``finish`` then hashes the file once more.

    Write-behind: every ``WRITE_BEHIND`` bytes, a thread flushes what is written so
    far (``fdatasync``) while the upload goes on, so the ``fsync`` in ``finish``
    has only the tail left to wait for instead of the whole file (about a second
    per GiB here). An error that flush meets is kept and raised by ``finish``: the
    kernel reports a write-back error once, and it must not get lost.
    """

    def __init__(self, path: Path, temp_name: str, commit: Commit, *, resume: bool = False) -> None:
        self._path = path
        self.temp_name = temp_name
        self._commit = commit
        # O_EXCL: a random name that already exists means something is wrong, not
        # a file to reuse; only a kept partial upload is reopened on purpose.
        flags = os.O_RDWR | os.O_CLOEXEC | (0 if resume else os.O_CREAT | os.O_EXCL)
        self._fd: int | None = os.open(path, flags, 0o600)
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
        self._gathered: list[bytes] = []  # written next, in order, from ``_gathered_at``
        self._gathered_at = 0
        self._gathered_len = 0

    @property
    def size(self) -> int:
        """Bytes in the file so far: the end of the furthest write."""
        return self._size

    @property
    def closed(self) -> bool:
        """True after ``finish``, ``detach`` or ``abort``."""
        return self._fd is None

    def write(self, offset: int, data: bytes) -> None:
        """Write data at offset: gathered, or one blocking system call; no await, no
        hashing pass."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        if offset < 0:
            raise ValueError("negative offset")
        if not data:
            return  # an empty write changes nothing on disk, so nothing here either
        if type(data) is not bytes:
            data = bytes(data)  # kept until written: it must not change meanwhile
        if self._gathered and offset != self._gathered_at + self._gathered_len:
            self._write_gathered()
        gathered = self._gathered
        if not gathered:
            self._gathered_at = offset
        gathered.append(data)
        self._gathered_len += len(data)
        if self._gathered_len >= GATHER or len(gathered) >= GATHER_PARTS:
            self._write_gathered()
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

    def _write_gathered(self, fd: int | None = None) -> None:
        """Write the gathered writes: one pwritev, more calls only if it wrote less."""
        gathered = self._gathered
        if not gathered:
            return
        fd = self._fd if fd is None else fd
        assert fd is not None
        at, total = self._gathered_at, self._gathered_len
        # Taken before writing: after a failure the upload fails, nothing is retried.
        self._gathered = []
        self._gathered_len = 0
        written = os.pwritev(fd, gathered, at) if len(gathered) > 1 else 0
        if written < total:
            # pwrite(v) may write less than asked (signals, some file systems).
            view = memoryview(gathered[0] if len(gathered) == 1 else b"".join(gathered))
            while written < total:
                written += os.pwrite(fd, view[written:], at + written)

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
        self._write_gathered()
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
        self._write_gathered()
        if self._hash_valid and self._hashed_to == self._size:
            return self._hash.hexdigest()
        return sha256_of_fd(self._fd)

    def read_head(self, n: int) -> bytes:
        """The first n bytes written so far (fewer if the file is shorter)."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        self._write_gathered()
        return os.pread(self._fd, n, 0)

    def open_written(self) -> BinaryIO:
        """A read-only file of the spool file (its own offset), for content checks."""
        if self._fd is None:
            raise ValueError("blob writer is closed")
        self._write_gathered()
        return open(self._path, "rb")  # the caller closes it

    def detach(self) -> str:
        """Close the file but keep it in the spool, to resume later; its temp name.

        The file's time is renewed, so a sweep of the spool counts the keep time
        from now.
        """
        if self._fd is not None:
            try:
                self._write_gathered()
            finally:
                self._join_behind()
                os.close(self._fd)
                self._fd = None
        os.utime(self._path)
        return self.temp_name

    def finish(self) -> BlobInfo:
        """Make the content durable and visible under its hash; return the hash and size.

        Blocking (hashing, fsync, the backend's commit); run it in a thread from
        async code. On failure the spool file is removed and the writer is closed.
        """
        fd = self._fd
        if fd is None:
            raise ValueError("blob writer is closed")
        self._fd = None
        try:
            self._write_gathered(fd)
            self._join_behind()
            if self._behind_error is not None:
                raise self._behind_error
            if self._hash_valid and self._hashed_to == self._size:
                digest = self._hash.hexdigest()
            else:
                digest = sha256_of_fd(fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            self._path.unlink(missing_ok=True)
            raise
        os.close(fd)
        try:
            self._commit(self._path, digest)
        except BaseException:
            self._path.unlink(missing_ok=True)
            raise
        return BlobInfo(digest, self._size)

    def abort(self) -> None:
        """Throw the upload away; safe to call more than once and after ``finish``."""
        self._gathered = []
        self._gathered_len = 0
        if self._fd is not None:
            self._join_behind()
            os.close(self._fd)
            self._fd = None
        self._path.unlink(missing_ok=True)


class SpoolStream:
    """The ``BlobStream`` of a spool writer: each write goes at the end."""

    def __init__(self, writer: SpoolWriter) -> None:
        self._writer = writer

    @property
    def size(self) -> int:
        return self._writer.size

    def write(self, data: bytes) -> None:
        self._writer.write(self._writer.size, data)

    def finish(self) -> BlobInfo:
        return self._writer.finish()

    def abort(self) -> None:
        self._writer.abort()
