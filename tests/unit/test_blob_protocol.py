"""The ``BlobStore`` Protocol, run against every backend: the local file system and
S3 (a real SeaweedFS, ``tests/s3server.py``).

Only the Protocol's methods are used here (no paths, no files), so another backend
joins by adding its name to ``BACKENDS`` and a branch to ``Stores.make``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qprserver.storage.base import BlobNotFound, BlobStore
from qprserver.storage.local import FileBlobStore
from qprserver.storage.s3 import S3BlobStore
from tests.s3server import SeaweedS3

BACKENDS = ["local", "s3"]


class Stores:
    """Makes stores of one backend over one data folder (and, for S3, one key prefix),
    as a node restarted on the same data would; closes them after the test."""

    def __init__(self, backend: str, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self._request = request
        self._prefix = f"t-{uuid.uuid4().hex[:12]}/"
        self.made: list[BlobStore] = []

    def make(self, root: Path) -> BlobStore:
        store: BlobStore
        if self.backend == "local":
            store = FileBlobStore(root, node_id="node-1")
        elif self.backend == "s3":
            server: SeaweedS3 = self._request.getfixturevalue("s3_server")
            store = S3BlobStore(root, server.location(self._prefix), node_id="node-1")
        else:
            raise AssertionError(f"unknown backend {self.backend}")
        self.made.append(store)
        return store


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    made = Stores(str(request.param), request)
    try:
        yield made
    finally:
        for store in made.made:
            store.close()


@pytest.fixture
def store(stores: Stores, tmp_path: Path) -> BlobStore:
    return stores.make(tmp_path / "data")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(store: BlobStore, data: bytes) -> str:
    writer = store.begin_write()
    writer.write(0, data)
    return writer.finish().sha256


def _read_all(store: BlobStore, sha256: str) -> bytes:
    reader = store.open_reader(sha256)
    try:
        out = b""
        while chunk := reader.pread(len(out), 7):
            out += chunk
        return out
    finally:
        reader.close()


def test_a_finished_blob_is_found_under_its_hash_and_reads_back(store: BlobStore) -> None:
    before = time.time()
    writer = store.begin_write()
    writer.write(0, b"hello ")
    writer.write(6, b"world")
    assert writer.size == 11
    assert list(store.iter_blobs()) == []  # nothing visible before finish
    info = writer.finish()
    assert info.sha256 == _sha(b"hello world") and info.size == 11
    assert writer.closed
    assert store.exists(info.sha256)
    stat = store.stat(info.sha256)
    assert stat.sha256 == info.sha256 and stat.size == 11
    assert before - 1 <= stat.stored_at <= time.time() + 1
    assert [b.sha256 for b in store.iter_blobs()] == [info.sha256]
    assert _read_all(store, info.sha256) == b"hello world"


def test_a_reader_gives_size_short_reads_at_the_end_and_nothing_beyond(store: BlobStore) -> None:
    digest = _put(store, b"0123456789")
    reader = store.open_reader(digest)
    try:
        assert reader.size == 10
        assert reader.pread(0, 4) == b"0123"
        assert reader.pread(8, 100) == b"89"
        assert reader.pread(10, 5) == b""
        assert reader.pread(2**40, 5) == b""
        fd = reader.fileno()
        if fd is not None:  # the fast path reads the same bytes
            assert os.pread(fd, 3, 4) == b"456"
    finally:
        reader.close()
    reader.close()  # twice is harmless


def test_the_same_content_twice_is_stored_once(store: BlobStore) -> None:
    first = _put(store, b"same")
    assert _put(store, b"same") == first
    assert [b.sha256 for b in store.iter_blobs()] == [first]


@pytest.mark.parametrize(
    ("writes", "expected"),
    [
        ([(5, b"56789"), (0, b"01234"), (2, b"X")], b"01X3456789"),  # out of order, a rewrite
        ([(0, b"aaaa"), (4, b"bbbb"), (0, b"c"), (8, b"dd")], b"caaabbbbdd"),
        ([(4, b"tail")], b"\x00\x00\x00\x00tail"),  # a gap reads as zeros
        ([(0, b"abc"), (100, b"")], b"abc"),  # an empty write changes nothing
    ],
)
def test_the_hash_is_of_the_bytes_as_they_end_up(
    store: BlobStore, writes: list[tuple[int, bytes]], expected: bytes
) -> None:
    writer = store.begin_write()
    for offset, data in writes:
        writer.write(offset, data)
    assert writer.size == len(expected)
    assert writer.digest() == _sha(expected)
    info = writer.finish()
    assert info.sha256 == _sha(expected) and info.size == len(expected)
    assert _read_all(store, info.sha256) == expected


def test_shuffled_chunks_give_the_same_hash_as_sequential_ones(store: BlobStore) -> None:
    data = random.Random(7).randbytes(300_000)
    chunks = [(offset, data[offset : offset + 32768]) for offset in range(0, len(data), 32768)]
    random.Random(8).shuffle(chunks)
    writer = store.begin_write()
    for offset, chunk in chunks:
        writer.write(offset, chunk)
    assert writer.finish().sha256 == _sha(data)


def test_a_truncation_cuts_the_bytes_and_the_hash(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"0123456789")
    writer.truncate(4)
    assert writer.size == 4
    writer.write(4, b"x")
    assert writer.finish().sha256 == _sha(b"0123x")


def test_what_is_written_can_be_read_before_finish(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"%PDF-1.7\n")
    writer.write(9, b"%%EOF\n")
    assert writer.read_head(5) == b"%PDF-"
    assert writer.read_head(1000) == b"%PDF-1.7\n%%EOF\n"
    with writer.open_written() as written:
        assert written.read() == b"%PDF-1.7\n%%EOF\n"
        written.seek(-6, os.SEEK_END)
        assert written.read() == b"%%EOF\n"
    writer.abort()


def test_abort_leaves_nothing_and_may_be_repeated(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"partial")
    writer.abort()
    writer.abort()
    assert writer.closed
    assert list(store.iter_blobs()) == []
    assert store.sweep_temp(older_than_seconds=0, now=time.time() + 10) == 0


def test_a_closed_writer_refuses_more_work(store: BlobStore) -> None:
    finished = store.begin_write()
    finished.write(0, b"x")
    finished.finish()
    aborted = store.begin_write()
    aborted.abort()
    for writer in (finished, aborted):
        for work in (
            functools.partial(writer.write, 1, b"y"),
            writer.finish,
            writer.digest,
            writer.open_written,
            functools.partial(writer.truncate, 0),
        ):
            with pytest.raises(ValueError, match="closed"):
                work()
    assert [b.sha256 for b in store.iter_blobs()] == [_sha(b"x")]


def test_abort_after_finish_keeps_the_blob(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"kept")
    info = writer.finish()
    writer.abort()
    assert _read_all(store, info.sha256) == b"kept"


def test_negative_offsets_and_sizes_are_refused(store: BlobStore) -> None:
    writer = store.begin_write()
    with pytest.raises(ValueError, match="negative"):
        writer.write(-1, b"x")
    with pytest.raises(ValueError, match="negative"):
        writer.truncate(-1)
    assert writer.size == 0
    writer.abort()


def test_a_detached_upload_resumes_where_it_stopped(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"first half, ")
    name = writer.detach()
    assert writer.closed
    resumed = store.resume_write(name)
    assert resumed.size == 12
    resumed.write(12, b"second half")
    assert resumed.finish().sha256 == _sha(b"first half, second half")


def test_the_same_node_resumes_its_kept_upload_after_a_restart(
    stores: Stores, tmp_path: Path
) -> None:
    first = stores.make(tmp_path / "data")
    writer = first.begin_write()
    writer.write(0, b"kept across ")
    name = writer.detach()
    again = stores.make(tmp_path / "data")  # the node started anew
    # The start-up sweep clears leftovers, not what is kept to resume.
    assert again.sweep_temp(0, time.time() + 10, spare=frozenset({name})) == 0
    resumed = again.resume_write(name)
    resumed.write(12, b"a restart")
    assert resumed.finish().sha256 == _sha(b"kept across a restart")


def test_a_removed_or_swept_upload_cannot_be_resumed(store: BlobStore) -> None:
    removed, swept, spared = (store.begin_write() for _ in range(3))
    for writer in (removed, swept, spared):
        writer.write(0, b"bytes")
    removed_name, swept_name, spared_name = (w.detach() for w in (removed, swept, spared))
    store.remove_temp(removed_name)
    store.remove_temp(removed_name)  # gone already: nothing happens
    later = time.time() + 7200
    assert store.sweep_temp(3600, later, spare=frozenset({spared_name})) == 1
    for name in (removed_name, swept_name):
        with pytest.raises(FileNotFoundError):
            store.resume_write(name)
    assert store.resume_write(spared_name).finish().sha256 == _sha(b"bytes")


def test_the_sweep_spares_uploads_still_being_written(store: BlobStore) -> None:
    writer = store.begin_write()
    writer.write(0, b"recent")
    assert store.sweep_temp(3600, time.time()) == 0
    assert writer.finish().sha256 == _sha(b"recent")


@pytest.mark.parametrize("bad", ["", "upload-x.part", "../../etc/passwd", "a/../../b", "/etc"])
def test_temp_names_the_store_never_gave_are_refused(store: BlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.resume_write(bad)
    store.remove_temp(bad)  # refused silently: nothing outside the spool is touched


def test_a_blob_is_deleted_once_and_then_not_found(store: BlobStore) -> None:
    digest = _put(store, b"gone soon")
    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.stat(digest)
    with pytest.raises(BlobNotFound):
        # At opening, or (a reader over the network) at its first read.
        _read_all(store, digest)


def test_delete_if_older_goes_by_the_time_stored(store: BlobStore) -> None:
    digest = _put(store, b"old enough?")
    stored_at = store.stat(digest).stored_at
    assert store.delete_if_older(digest, stored_at - 60) is False
    assert store.exists(digest)
    assert store.delete_if_older(digest, stored_at + 60) is True
    assert not store.exists(digest)
    assert store.delete_if_older(digest, stored_at + 60) is False


def test_storing_the_same_content_again_renews_its_time(store: BlobStore) -> None:
    digest = _put(store, b"again")
    # File times may be as coarse as a clock tick: a cutoff well between the two stores.
    cutoff = store.stat(digest).stored_at + 0.02
    time.sleep(0.1)
    _put(store, b"again")
    assert store.stat(digest).stored_at >= cutoff
    assert store.delete_if_older(digest, cutoff) is False


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/", "0" * 65, " " + "0" * 63]
)
def test_hashes_that_are_no_sha256_are_refused(store: BlobStore, bad: str) -> None:
    for call in (
        store.open_reader,
        store.stat,
        store.exists,
        store.delete,
        lambda h: store.delete_if_older(h, 0.0),
    ):
        with pytest.raises(ValueError, match="SHA-256"):
            call(bad)


def test_the_store_checks_itself_writable_and_leaves_nothing_behind(store: BlobStore) -> None:
    found = {check.name: check for check in store.check()}
    assert found["writable"].status == "ok"
    assert all(check.status in ("ok", "hint") for check in found.values())
    assert list(store.iter_blobs()) == []
    assert store.sweep_temp(0, time.time() + 10) == 0
