from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from qprserver.blobstore import BlobNotFound, FileBlobStore


def test_finished_blob_is_stored_under_its_hash_read_only(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    writer = store.begin_write()
    writer.write(0, b"hello ")
    writer.write(6, b"world")
    assert not any(store.blobs.rglob("*/*/*"))  # nothing visible before finish
    info = writer.finish()
    assert info.sha256 == hashlib.sha256(b"hello world").hexdigest() and info.size == 11
    path = store.path_for(info.sha256)
    assert path.read_bytes() == b"hello world"
    assert path.stat().st_mode & 0o777 == 0o400
    assert list(store.tmp.iterdir()) == []
    with store.open(info.sha256) as handle:
        assert handle.read() == b"hello world"


def test_same_content_twice_is_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    for _ in range(2):
        w = store.begin_write()
        w.write(0, b"same")
        w.finish()
    assert len(list(store.iter_hashes())) == 1
    assert list(store.tmp.iterdir()) == []


def test_out_of_order_writes_give_the_right_hash(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(5, b"56789")
    w.write(0, b"01234")
    w.write(2, b"X")  # a rewrite
    assert w.finish().sha256 == hashlib.sha256(b"01X3456789").hexdigest()


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"partial")
    w.abort()
    w.abort()
    assert list(store.tmp.iterdir()) == [] and list(store.iter_hashes()) == []


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    old, fresh = store.begin_write(), store.begin_write()
    os.utime(old.temp_path, (1000, 1000))
    assert store.sweep_temp(older_than_seconds=3600, now=fresh.temp_path.stat().st_mtime) == 1
    assert list(store.tmp.iterdir()) == [fresh.temp_path]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/"])
def test_hashes_that_are_no_sha256_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        FileBlobStore(tmp_path).path_for(bad)


def test_missing_blob_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        FileBlobStore(tmp_path).open("0" * 64)


def test_adopt_takes_only_files_from_the_temp_folder(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "store")
    built = store.new_temp_path(".zip")
    built.write_bytes(b"zip")
    info = store.adopt(built)
    assert store.exists(info.sha256) and not built.exists()
    elsewhere = tmp_path / "x"
    elsewhere.write_bytes(b"x")
    with pytest.raises(ValueError):
        store.adopt(elsewhere)
