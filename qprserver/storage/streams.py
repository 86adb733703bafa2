"""File objects over the storage Protocols, for code that wants a file (``zipfile``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

from qprserver.storage.base import BlobReader, BlobStream

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK = 1024 * 1024


class StreamFile(io.RawIOBase):
    """A write-only file, not seekable, whose bytes go to a ``BlobStream`` in order.

    ``zipfile`` sees that it cannot seek and writes each member's sizes and CRC after
    its data (a data descriptor) instead of seeking back into its header, so the
    archive goes out front to back: on S3 as the parts of one multipart upload.
    """

    def __init__(self, stream: BlobStream) -> None:
        super().__init__()
        self._stream = stream

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: ReadableBuffer) -> int:
        chunk = bytes(data)
        self._stream.write(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._stream.size


def chunks(reader: BlobReader, size: int = CHUNK) -> Iterator[bytes]:
    """A blob's bytes in order, at most size at a time."""
    offset = 0
    while data := reader.pread(offset, size):
        yield data
        offset += len(data)
