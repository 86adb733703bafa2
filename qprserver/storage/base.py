"""What the rest of qprserver needs of blob storage: the Protocols every consumer uses.

A blob is a document's or bundle's bytes, stored once per content under its SHA-256
and never changed. Consumers hold a ``BlobStore`` and see blobs only through it:

- reading: ``open_reader`` gives a ``BlobReader`` (``size``, ``pread``; ``fileno``
  where the backend has a file descriptor, for ``pread``/``sendfile`` without a
  Python call in between; ``ready`` to await bytes that come over the network);
- writing: ``begin_write`` gives a ``BlobWriter`` that takes writes at any offset
  into this node's spool (``storage/spool.py``), hashes as it goes and, on
  ``finish``, makes the content durable and visible under its hash. An upload cut
  off can be ``detach``-ed under a temp name and resumed later (``resume_write``).
  ``begin_stream`` gives a ``BlobStream`` for bytes that come in order only
  (bundles), which a backend may send on as they come;
- looking: ``stat``, ``exists``, ``iter_blobs`` (every blob with the time it was
  stored, for the sweep of unreferenced blobs); removing: ``delete``,
  ``delete_if_older``; ``sweep_temp`` clears this node's abandoned uploads.

Only a backend knows where its blobs are (``storage/local.py``: files under the data
folder; ``storage/s3.py``: objects in a bucket); nothing else builds a blob's path.
The methods block; callers on the event loop use a thread, except ``pread`` and a
writer's ``write``, which are single system calls on the local backend, and
``pread`` after ``await reader.ready(...)`` on any backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from qprserver.errors import NotFound

_HEX64 = re.compile(r"[0-9a-f]{64}")


class BlobNotFound(NotFound):
    """No blob with this hash is stored."""


def check_hash(sha256: str) -> str:
    """sha256 if it is 64 lowercase hex digits; ValueError otherwise."""
    # The hash becomes a path or an object key; anything else could climb out of
    # the store (``../``) or alias another blob (upper case).
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise ValueError("not a SHA-256 hex digest")
    return sha256


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its SHA-256 (lowercase hex) and its size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """One finding of ``BlobStore.check``: what was looked at, "ok", "hint" or "error",
    and what was found (for operators, in English)."""

    name: str
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class BlobStat:
    """A stored blob with the Unix time it was stored, or last stored again."""

    sha256: str
    size: int
    stored_at: float


class BlobReader(Protocol):
    """A stored blob opened for reading."""

    @property
    def size(self) -> int:
        """The blob's size in bytes."""
        ...

    def pread(self, offset: int, n: int) -> bytes:
        """Up to n bytes from offset; fewer at the end, b"" beyond it."""
        ...

    def fileno(self) -> int | None:
        """A file descriptor of the bytes for pread/sendfile/lseek; None if the backend has none."""
        ...

    async def ready(self, offset: int, n: int) -> None:
        """Wait, without blocking the event loop, until ``pread(offset, n)`` returns at
        once; raises as ``pread`` would (BlobNotFound, OSError). Readers with a file
        descriptor are always ready."""
        ...

    def close(self) -> None:
        """Release the blob; safe to call more than once."""
        ...


class BlobWriter(Protocol):
    """A blob being written; nothing is visible under a hash until ``finish``."""

    @property
    def size(self) -> int:
        """Bytes written so far: the end of the furthest write."""
        ...

    @property
    def closed(self) -> bool:
        """True after ``finish``, ``detach`` or ``abort``."""
        ...

    def write(self, offset: int, data: bytes) -> None:
        """Write data at offset (no await: one system call on the local backend)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut (or extend with zeros) to size bytes."""
        ...

    def digest(self) -> str:
        """The SHA-256 of the bytes written so far, without finishing (blocking)."""
        ...

    def read_head(self, n: int) -> bytes:
        """The first n bytes written so far (fewer if there are fewer)."""
        ...

    def open_written(self) -> BinaryIO:
        """A seekable read-only file of the bytes written so far, for content checks.

        The caller closes it; it does not follow later writes' size reliably.
        """
        ...

    def detach(self) -> str:
        """Stop writing but keep the bytes to resume later; the temp name to resume by."""
        ...

    def finish(self) -> BlobInfo:
        """Make the content durable and visible under its hash (blocking); then closed."""
        ...

    def abort(self) -> None:
        """Throw the bytes away; safe to call more than once and after ``finish``."""
        ...


class BlobStream(Protocol):
    """A blob written front to back in one go; nothing is visible until ``finish``."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    def write(self, data: bytes) -> None:
        """Append data (blocking: a backend may send a part on its way here)."""
        ...

    def finish(self) -> BlobInfo:
        """Make the content durable and visible under its hash (blocking)."""
        ...

    def abort(self) -> None:
        """Throw the bytes away; safe to call more than once and after ``finish``."""
        ...


class BlobStore(Protocol):
    """Content-addressed storage of blobs, with this node's spool for writes."""

    def begin_write(self) -> BlobWriter:
        """Start a new blob."""
        ...

    def begin_stream(self) -> BlobStream:
        """Start a new blob whose bytes come in order only (a bundle being zipped)."""
        ...

    def resume_write(self, temp_name: str) -> BlobWriter:
        """Reopen a detached upload to write on; FileNotFoundError if it is gone."""
        ...

    def remove_temp(self, temp_name: str) -> None:
        """Remove a detached upload's bytes; nothing if they are gone already."""
        ...

    def sweep_temp(
        self, older_than_seconds: float, now: float, spare: frozenset[str] = frozenset()
    ) -> int:
        """Remove this node's uploads untouched for older_than_seconds, but none named in
        spare (temp names of kept partial uploads); how many were removed."""
        ...

    def open_reader(self, sha256: str) -> BlobReader:
        """Open a stored blob for reading; BlobNotFound if absent."""
        ...

    def stat(self, sha256: str) -> BlobStat:
        """Size and time stored of a blob; BlobNotFound if absent."""
        ...

    def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        ...

    def delete(self, sha256: str) -> bool:
        """Remove a blob durably; False if it was not there."""
        ...

    def delete_if_older(self, sha256: str, cutoff: float) -> bool:
        """Remove a blob stored (or stored again) before cutoff, a Unix time; False when
        it is newer or gone. A store of the same content racing with it keeps its blob."""
        ...

    def iter_blobs(self) -> Iterator[BlobStat]:
        """Every stored blob, in no particular order."""
        ...

    def check(self) -> list[StoreCheck]:
        """Whether the store is reachable and writable, and hints on its set-up (blocking)."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is not used afterwards."""
        ...
