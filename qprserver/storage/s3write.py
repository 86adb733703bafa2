"""Writing to the bucket in parts: a multipart upload, and the ``BlobStream`` a bundle
is zipped into (``storage/s3.py`` tells where each goes)."""

from __future__ import annotations

import contextlib
import hashlib
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from qprserver.storage.base import BlobInfo
from qprserver.storage.s3client import S3Connection

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

    from qprserver.storage.s3 import S3BlobStore

PART = 8 * 1024 * 1024  # bytes per part of a multipart upload (S3's least is 5 MiB)
IN_FLIGHT = 4  # parts of one upload being sent at once
STORED_AT = "stored-at"


def stamp() -> dict[str, str]:
    """The metadata of an object stored now: the Unix time, to the microsecond."""
    return {STORED_AT: repr(time.time())}


class Multipart:
    """One multipart upload to a key: parts go out ``IN_FLIGHT`` at a time."""

    def __init__(self, conn: S3Connection, key: str) -> None:
        self._conn = conn
        self.key = key
        created = conn.run(
            conn.client.create_multipart_upload(Bucket=conn.bucket, Key=key, Metadata=stamp()),
            "create multipart upload",
        )
        self._id = created["UploadId"]
        self._parts: list[Future[str]] = []

    def add(self, data: bytes) -> None:
        """Send the next part; wait first while ``IN_FLIGHT`` parts are on their way."""
        waiting = [p for p in self._parts if not p.done()]
        if len(waiting) >= IN_FLIGHT:
            waiting[0].result()
        self._parts.append(self._conn.submit(self._send(len(self._parts) + 1, data)))

    async def _send(self, number: int, data: bytes) -> str:
        sent = await self._conn.client.upload_part(
            Bucket=self._conn.bucket, Key=self.key, UploadId=self._id, PartNumber=number, Body=data
        )
        return sent["ETag"]

    def complete(self) -> None:
        parts: list[CompletedPartTypeDef] = [
            {"ETag": part.result(), "PartNumber": number}
            for number, part in enumerate(self._parts, start=1)
        ]
        self._conn.run(
            self._conn.client.complete_multipart_upload(
                Bucket=self._conn.bucket,
                Key=self.key,
                UploadId=self._id,
                MultipartUpload={"Parts": parts},
            ),
            "complete multipart upload",
        )

    def abort(self) -> None:
        for part in self._parts:
            part.cancel()
        # If this fails too, the bucket's lifecycle rule for incomplete uploads clears it.
        with contextlib.suppress(OSError):
            self._conn.run(
                self._conn.client.abort_multipart_upload(
                    Bucket=self._conn.bucket, Key=self.key, UploadId=self._id
                ),
                "abort multipart upload",
            )


class S3BlobStream:
    """A blob zipped front to back: parts go to the bucket as they fill."""

    def __init__(self, store: S3BlobStore) -> None:
        self._store = store
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._size = 0
        self._upload: Multipart | None = None
        self._closed = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: bytes) -> None:
        if self._closed:
            raise ValueError("blob stream is closed")
        self._hash.update(data)
        self._size += len(data)
        self._buffer += data
        while len(self._buffer) >= PART:
            if self._upload is None:
                self._upload = Multipart(self._store.conn, self._store.incoming_key())
            self._upload.add(bytes(self._buffer[:PART]))
            del self._buffer[:PART]

    def finish(self) -> BlobInfo:
        if self._closed:
            raise ValueError("blob stream is closed")
        self._closed = True
        digest = self._hash.hexdigest()
        store, upload = self._store, self._upload
        try:
            if upload is None:
                if not store.touch(digest):
                    store.put(digest, bytes(self._buffer))
                return BlobInfo(digest, self._size)
            if self._buffer:
                upload.add(bytes(self._buffer))
            upload.complete()
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        finally:
            self._buffer = bytearray()
        try:
            if not store.touch(digest):
                store.copy(upload.key, store.blob_key(digest), self._size)
        finally:
            store.delete_key(upload.key)
        return BlobInfo(digest, self._size)

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            self._buffer = bytearray()
            if self._upload is not None:
                self._upload.abort()
