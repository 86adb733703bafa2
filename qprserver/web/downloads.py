"""Downloads over HTTP: one file (with ranges) or many as one ZIP, both streamed.

A file is read from the blob store in pieces with ``pread`` as the client takes
them; nothing is read ahead or kept. A download that reaches the client completely
(its last piece was handed to the server) is a download like an SFTP one: the same
receipt and audit event through ``exchange.receipts``. A range request that ends
early counts its bytes towards the delivery's coverage, so pieces fetched by a
resuming client make a receipt once they cover the file, as over SFTP.

A ZIP of many deliveries is written with the standard library's ``zipfile`` onto a
writer that is never seeked: each member's header, bytes and data descriptor go out
as they are made (entries stored, not compressed: the documents are PDF and XML that
the client fetches over a fast line, and storing keeps the server's CPU for the
transfer). No new dependency, nothing built in memory or on disk: ``zipfile`` with
a non-seekable stream is what ``stream-zip`` would do for us, in the library that
ships with Python. Each member written completely records its receipt.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zipfile
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import IO
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from qprserver.db.engine import Database
from qprserver.exchange import receipts
from qprserver.exchange.coverage import PartialRead
from qprserver.storage.base import BlobReader

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII fallback and the real name (RFC 6266, RFC 5987)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """One byte range of a ``Range`` header as (start, end exclusive); None for none
    (or one we serve whole: several ranges); False when it cannot be satisfied."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        length = int(last)
        if length == 0:
            return False
        return max(0, size - length), size
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return False
    return start, end


def _headers(name: str, length: int) -> dict[str, str]:
    return {
        "Content-Disposition": content_disposition(name),
        "Content-Length": str(length),
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
    }


async def _pieces(reader: BlobReader, start: int, end: int) -> AsyncIterator[bytes]:
    offset = start
    while offset < end:
        wanted = min(CHUNK, end - offset)
        if reader.fileno() is None:
            await reader.ready(offset, wanted)  # an object store's range, fetched ahead
        data = reader.pread(offset, wanted)
        if not data:
            raise OSError(f"stored file ends at {offset}, {end} expected")
        offset += len(data)
        yield data


def file_response(
    request: Request,
    db: Database,
    reader: BlobReader,
    *,
    name: str,
    size: int,
    receipt: receipts.Download | None,
) -> Response:
    """One stored file as an attachment; ``receipt`` is recorded when it all arrived
    (or its ranges complete the delivery's coverage)."""
    wanted = parse_range(request.headers.get("range"), size)
    if wanted is False:
        reader.close()
        return Response(
            status_code=416,
            headers={"Content-Range": f"bytes */{size}", "Cache-Control": "no-store"},
        )
    start, end = wanted if isinstance(wanted, tuple) else (0, size)
    headers = _headers(name, end - start)
    if isinstance(wanted, tuple):
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    status = 206 if isinstance(wanted, tuple) else 200
    if request.method == "HEAD":
        # Headers only: no byte is read, and no receipt.
        reader.close()
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")

    async def body() -> AsyncIterator[bytes]:
        began = time.monotonic()
        try:
            async for piece in _pieces(reader, start, end):
                yield piece
        finally:
            reader.close()
        # Only here when the server took the last piece: the client has it all.
        if receipt is not None:
            done = dataclasses.replace(receipt, seconds=time.monotonic() - began)
            item: receipts.Item = (
                done if (start, end) == (0, size) else PartialRead(done, size, ((start, end),))
            )
            await receipts.record(db, receipts.Batch.of([item]))

    return StreamingResponse(
        body(),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


class _Pipe:
    """A file-like sink zipfile writes to; what it wrote is taken out in pieces."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


Member = tuple[str, datetime, BlobReader, receipts.Download | None]


def zip_response(db: Database, name: str, members: Sequence[Member]) -> Response:
    """Many stored files as one ZIP, streamed; each complete member makes its receipt."""

    async def body() -> AsyncIterator[bytes]:
        pipe = _Pipe()
        done: list[receipts.Item] = []
        try:
            # The pipe cannot seek: zipfile then writes data descriptors after each member.
            with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:
                for member_name, when, reader, receipt in members:
                    info = zipfile.ZipInfo(member_name, _zip_time(when))
                    with archive.open(info, "w", force_zip64=reader.size > 0x7FFFFFFF) as out:
                        async for piece in _pieces(reader, 0, reader.size):
                            _write(out, piece)
                            yield pipe.take()
                    reader.close()
                    if receipt is not None:
                        done.append(receipt)
            yield pipe.take()
        finally:
            for _, _, reader, _ in members:
                reader.close()
            if done:
                await receipts.record(db, receipts.Batch.of(done))

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={"Content-Disposition": content_disposition(name), "Cache-Control": "no-store"},
    )


def _write(out: IO[bytes], data: bytes) -> None:
    out.write(data)


def _zip_time(when: datetime) -> tuple[int, int, int, int, int, int]:
    # ZIP times have no zone and start in 1980; UTC, as the listing shows in the manifest.
    year = max(1980, when.year)
    return (year, when.month, when.day, when.hour, when.minute, when.second)
