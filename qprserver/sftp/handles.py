"""Open-file objects of an SFTP session: downloads, uploads and in-memory files.

``read`` and ``write`` on these do no database work and never await: each is one
system call on a file opened at ``open`` time (DESIGN.md §5). Downloads read through
the store's ``BlobReader`` and uploads write through its ``BlobWriter``; where the
reader has a file descriptor (the local backend), ``read`` calls ``os.pread`` on it
directly, as fast as before there was a Protocol in between.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

from qprserver.exchange import coverage
from qprserver.exchange.coverage import Range
from qprserver.sftp.paths import VPath
from qprserver.storage.base import BlobReader, BlobWriter


class DownloadHandle:
    """A blob opened for reading; remembers which bytes were served.

    ``delivery_id`` is None for files that are no delivery (bundles): a complete
    download of those records no receipt.

    Reads of one handle nearly always come in order (one request at a time per
    session, clients send them by offset), so the hot path only extends the current
    run of bytes; a read elsewhere puts the run aside (``_done``) and starts another.
    What was served is settled at close (``ranges``), never in ``read``.
    """

    __slots__ = (
        "_done",
        "_run_end",
        "_run_start",
        "delivery_id",
        "fd",
        "name",
        "opened",
        "reader",
        "sha256",
        "size",
    )

    def __init__(
        self, reader: BlobReader, size: int, delivery_id: int | None, sha256: str, name: str
    ) -> None:
        self.reader = reader
        self.fd = reader.fileno()  # None: every read goes through reader.pread
        self.size = size
        self.delivery_id = delivery_id
        self.sha256 = sha256
        self.name = name
        self.opened = time.monotonic()  # for the download's elapsed time, at close
        self._run_start = 0  # the bytes served last: [_run_start, _run_end)
        self._run_end = 0
        self._done: list[Range] = []  # earlier runs

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size:
            # Also keeps offsets beyond what the OS takes (up to 2**64 - 1) from pread.
            return b""
        fd = self.fd
        data = os.pread(fd, length, offset) if fd is not None else self.reader.pread(offset, length)
        if data:
            end = offset + len(data)
            if self._run_start <= offset <= self._run_end:
                if end > self._run_end:
                    self._run_end = end
            else:
                self._set_aside(offset, end)
        return data

    def _set_aside(self, start: int, end: int) -> None:
        if self._run_end > self._run_start:
            self._done.append((self._run_start, self._run_end))
            if len(self._done) > 2 * coverage.MAX_RANGES:
                # Only a client reading scattered pieces gets here; memory stays bounded.
                self._done = coverage.merge(self._done)
        self._run_start, self._run_end = start, end

    def ranges(self) -> list[Range]:
        """The byte ranges served so far, merged and sorted."""
        return coverage.merge([*self._done, (self._run_start, self._run_end)])

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's ranges extension (SEEK_DATA/SEEK_HOLE); reads use pread."""
        if self.fd is not None:
            return os.lseek(self.fd, offset, whence)
        return _seek_in(self.size, offset, whence)  # no descriptor: one range, no holes

    @property
    def complete(self) -> bool:
        return coverage.covers(self.ranges(), self.size)

    def close(self) -> None:
        self.reader.close()


def _seek_in(size: int, offset: int, whence: int) -> int:
    """lseek's SEEK_DATA/SEEK_HOLE answer for size bytes of data without holes."""
    if whence == os.SEEK_DATA:
        if offset >= size:
            raise OSError(errno.ENXIO, "No more data")
        return offset
    if whence == os.SEEK_HOLE:
        return size
    return offset


class MemoryHandle:
    """A small file served from memory (upload protocols)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self, offset: int, length: int) -> bytes:
        return self.body[offset : offset + length]

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's ranges extension: the body is one range of data, no holes."""
        return _seek_in(len(self.body), offset, whence)

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(eq=False)
class UploadHandle:
    """An upload in progress into ``/outbox``."""

    path: VPath
    writer: BlobWriter
    limit: int
    owner: object = None  # the SFTP session that opened it
    failure: str | None = None
    closed: bool = False
    # Opened with FXF_APPEND: every write goes to the end, whatever its offset says
    # (as OpenSSH's server does; OpenSSH ``reput`` opens so).
    append: bool = False
    mtime: int | None = None  # the modification time the client set, if any
    kept: bool = False  # cut off and kept as a partial upload
    # When the transfer began (``time.monotonic``), for the upload's elapsed time.
    opened: float = field(default_factory=time.monotonic)

    def write(self, offset: int, data: bytes) -> None:
        if self.append:
            offset = self.writer.size
        if offset + len(data) > self.limit:
            self.failure = f"Datei größer als die erlaubten {self.limit} Bytes"
            raise OverflowError(self.failure)
        self.writer.write(offset, data)

    def seek(self, offset: int, whence: int) -> int:
        # asyncssh's ranges extension asks this of any handle; an upload is not for reading.
        raise OSError(errno.EACCES, "Not open for reading")
