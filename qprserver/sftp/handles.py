"""Open-file objects of an SFTP session: downloads, uploads and in-memory files.

``read`` and ``write`` on these do no database work and never await: each is one
system call on a file opened at ``open`` time (DESIGN.md §5).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from qprserver.blobstore import BlobWriter
from qprserver.sftp.paths import VPath


class DownloadHandle:
    """A blob opened for reading; remembers which bytes were served.

    ``delivery_id`` is None for files that are no delivery (bundles): a complete
    download of those records no receipt.
    """

    __slots__ = ("_gaps", "covered", "delivery_id", "fd", "name", "sha256", "size")

    def __init__(self, fd: int, size: int, delivery_id: int | None, sha256: str, name: str) -> None:
        self.fd = fd
        self.size = size
        self.delivery_id = delivery_id
        self.sha256 = sha256
        self.name = name
        self.covered = 0  # every byte below this offset was served
        self._gaps: dict[int, int] = {}  # served ranges beyond `covered`: start -> end

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self.size:
            # Also keeps offsets beyond what the OS takes (up to 2**64 - 1) from pread.
            return b""
        data = os.pread(self.fd, length, offset)
        end = offset + len(data)
        if offset <= self.covered:
            if end > self.covered:
                self.covered = end
                # Clients keep many reads in flight; merge ranges that now touch.
                while self._gaps:
                    start = min(self._gaps)
                    if start > self.covered:
                        break
                    self.covered = max(self.covered, self._gaps.pop(start))
        elif data:
            self._gaps[offset] = max(end, self._gaps.get(offset, 0))
        return data

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's ranges extension (SEEK_DATA/SEEK_HOLE); reads use pread."""
        return os.lseek(self.fd, offset, whence)

    @property
    def complete(self) -> bool:
        return self.covered >= self.size

    def close(self) -> None:
        os.close(self.fd)


class MemoryHandle:
    """A small file served from memory (upload protocols)."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body

    def read(self, offset: int, length: int) -> bytes:
        return self.body[offset : offset + length]

    def seek(self, offset: int, whence: int) -> int:
        """For asyncssh's ranges extension: the body is one range of data, no holes."""
        if whence == os.SEEK_DATA:
            if offset >= len(self.body):
                raise OSError(errno.ENXIO, "No more data")
            return offset
        if whence == os.SEEK_HOLE:
            return len(self.body)
        return offset

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
