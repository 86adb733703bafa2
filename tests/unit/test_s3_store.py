"""What the S3 backend does beyond the Protocol tests: read-ahead within bounds, parts
of large uploads and bundles, nothing left behind, and clear failures."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from qprserver.storage import s3read
from qprserver.storage.s3 import S3BlobStore
from qprserver.storage.s3client import S3Location
from qprserver.storage.s3write import PART
from tests.s3server import SeaweedS3

MIB = 1024 * 1024


@pytest.fixture
def store(s3_server: SeaweedS3, tmp_path: Path) -> Iterator[S3BlobStore]:
    made = S3BlobStore(tmp_path / "data", s3_server.location(), node_id="n1")
    try:
        yield made
    finally:
        made.close()


def _keys(store: S3BlobStore, folder: str) -> list[str]:
    conn = store.conn
    page = conn.run(conn.client.list_objects_v2(Bucket=conn.bucket, Prefix=conn.key(folder)))
    return [item["Key"] for item in page.get("Contents", [])]


def test_a_large_upload_goes_in_parts_and_reads_back_in_any_order(store: S3BlobStore) -> None:
    data = random.Random(1).randbytes(2 * PART + 4321)
    writer = store.begin_write()
    for offset in range(0, len(data), 256 * 1024):
        writer.write(offset, data[offset : offset + 256 * 1024])
    info = writer.finish()
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert list((store.spool.folder).iterdir()) == []
    reader = store.open_reader(info.sha256)
    try:
        assert reader.size == len(data)
        assert reader.pread(len(data) - 10, 100) == data[-10:]
        assert reader.pread(s3read.CHUNK - 3, 6) == data[s3read.CHUNK - 3 : s3read.CHUNK + 3]
        assert reader.pread(7, 5) == data[7:12]
    finally:
        reader.close()


def test_a_sequential_reader_holds_a_bounded_window_and_never_waits_once_ahead(
    store: S3BlobStore,
) -> None:
    data = random.Random(2).randbytes(12 * s3read.CHUNK + 99)
    writer = store.begin_write()
    writer.write(0, data)
    digest = writer.finish().sha256
    reader = store.open_reader(digest)
    step = 256 * 1024
    waited = 0

    async def read_all() -> bytes:
        nonlocal waited
        out = bytearray()
        while len(out) < len(data):
            if not all(
                f.done() for i, f in reader._chunks.items() if i == len(out) // s3read.CHUNK
            ):
                waited += 1
            await reader.ready(len(out), step)
            out += reader.pread(len(out), step)
            assert len(reader._chunks) <= s3read.AHEAD + 2
        return bytes(out)

    try:
        assert asyncio.run(read_all()) == data
    finally:
        reader.close()
    # Only the first chunks of the window can be missing when asked for; a read-ahead
    # that never ran would wait at each of the 13 chunks.
    assert waited < 13


def test_a_bundle_stream_goes_up_in_parts_and_leaves_no_temporary_object(
    store: S3BlobStore,
) -> None:
    data = random.Random(3).randbytes(2 * PART + 17)
    for _ in range(2):  # the second time the content is there already
        stream = store.begin_stream()
        for offset in range(0, len(data), MIB):
            stream.write(data[offset : offset + MIB])
        info = stream.finish()
        assert info.sha256 == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert _keys(store, "incoming/") == []
    assert [b.sha256 for b in store.iter_blobs()] == [info.sha256]
    reader = store.open_reader(info.sha256)
    try:
        assert reader.pread(PART - 1, 3) == data[PART - 1 : PART + 2]
    finally:
        reader.close()


def test_an_aborted_bundle_stream_leaves_nothing(store: S3BlobStore) -> None:
    stream = store.begin_stream()
    stream.write(b"x" * (PART + 1))
    stream.abort()
    stream.abort()
    assert list(store.iter_blobs()) == []
    assert _keys(store, "incoming/") == []
    conn = store.conn
    uploads = conn.run(conn.client.list_multipart_uploads(Bucket=conn.bucket))
    assert [u for u in uploads.get("Uploads", []) if u["Key"].startswith(conn.key(""))] == []


def test_a_refused_upload_fails_with_the_stores_reason_and_keeps_nothing(
    s3_server: SeaweedS3, tmp_path: Path
) -> None:
    good = s3_server.location()
    bad = S3Location(
        good.endpoint, good.region, good.bucket, good.prefix, good.access_key_id, "wrong"
    )
    store = S3BlobStore(tmp_path / "data", bad, node_id="n1")
    try:
        writer = store.begin_write()
        writer.write(0, b"refused")
        with pytest.raises(OSError, match=r"^S3 \w+"):
            writer.finish()
        assert list(store.spool.folder.iterdir()) == []
    finally:
        store.close()
    assert "wrong" not in repr(bad)
