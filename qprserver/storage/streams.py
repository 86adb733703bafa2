"""File objects over the storage Protocols, for code that wants a file (``zipfile``)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from qprserver.storage.base import BlobReader, BlobWriter

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = 1024 * 1024


class WriterFile(io.RawIOBase):
    """A seekable, write-only file whose bytes go to a ``BlobWriter`` at their offset.

    ``zipfile`` writes a member, then seeks back to fill in its header; the writer
    takes writes at any offset (a write back only means one more hashing pass in
    ``finish``).
    """

    def __init__(self, writer: BlobWriter) -> None:
        super().__init__()
        self._writer = writer
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        self._writer.write(self._pos, chunk)
        self._pos += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._writer.size + offset
        else:
            raise ValueError(f"unsupported whence {whence}")
        if pos < 0:
            raise ValueError("negative position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos


def chunks(reader: BlobReader, size: int = CHUNK) -> Iterator[bytes]:
    """A blob's bytes in order, at most size at a time."""
    offset = 0
    while data := reader.pread(offset, size):
        yield data
        offset += len(data)
