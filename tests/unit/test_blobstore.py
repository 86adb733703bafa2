from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from qprserver.storage import local as blobstore
from qprserver.storage.local import BlobNotFound, FileBlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_finished_blob_is_stored_under_its_hash_read_only(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    writer = store.begin_write()
    writer.write(0, b"hello ")
    writer.write(6, b"world")
    assert writer.size == 11
    assert list(store.iter_hashes()) == []  # nothing visible before finish
    info = writer.finish()
    assert info.sha256 == _sha(b"hello world") and info.size == 11
    path = store.path_for(info.sha256)
    assert path == tmp_path / "blobs" / info.sha256[:2] / info.sha256[2:4] / info.sha256
    assert path.read_bytes() == b"hello world"
    assert path.stat().st_mode & 0o777 == 0o400
    assert list(store.tmp.iterdir()) == []
    assert store.exists(info.sha256) and store.size(info.sha256) == 11
    with store.open(info.sha256) as handle:
        assert handle.read() == b"hello world"


def test_store_folders_are_private_to_the_service_user(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "data")
    store.begin_write().finish()
    digest = _sha(b"")
    folders = [store.root, store.blobs, store.tmp, store.path_for(digest).parent]
    folders.append(store.path_for(digest).parent.parent)
    assert all(folder.stat().st_mode & 0o777 == 0o700 for folder in folders)


def test_temp_file_is_complete_and_readable_before_finish(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    writer = store.begin_write()
    writer.write(0, b"%PDF-1.7\n")
    writer.write(9, b"%%EOF\n")
    assert writer.path == writer.temp_path
    assert writer.temp_path.parent == store.tmp
    assert writer.temp_path.name.startswith("upload-") and writer.temp_path.suffix == ".part"
    assert writer.temp_path.read_bytes() == b"%PDF-1.7\n%%EOF\n"
    assert writer.read_head(5) == b"%PDF-"
    assert writer.read_head(1000) == b"%PDF-1.7\n%%EOF\n"


def test_same_content_twice_is_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first = store.begin_write()
    first.write(0, b"same")
    info = first.finish()
    inode = store.path_for(info.sha256).stat().st_ino
    second = store.begin_write()
    second.write(0, b"same")
    assert second.finish() == info
    assert list(store.iter_hashes()) == [info.sha256]
    assert store.path_for(info.sha256).stat().st_ino == inode  # the first copy was kept
    assert list(store.tmp.iterdir()) == []


def test_out_of_order_writes_give_the_right_hash(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(5, b"56789")
    w.write(0, b"01234")
    w.write(2, b"X")  # a rewrite
    info = w.finish()
    assert info.sha256 == _sha(b"01X3456789") and info.size == 10
    assert store.path_for(info.sha256).read_bytes() == b"01X3456789"


def test_shuffled_chunks_give_the_same_hash_as_sequential_ones(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(300_000)
    chunks = [(offset, data[offset : offset + 32768]) for offset in range(0, len(data), 32768)]
    random.Random(8).shuffle(chunks)
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    for offset, chunk in chunks:
        w.write(offset, chunk)
    assert w.finish().sha256 == _sha(data)


def test_a_rewrite_after_sequential_writes_is_noticed(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"aaaa")
    w.write(4, b"bbbb")
    w.write(0, b"c")  # would go unnoticed by a purely incremental hash
    w.write(8, b"dd")
    assert w.finish().sha256 == _sha(b"caaabbbbdd")


def test_a_gap_left_by_the_client_reads_as_zeros(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(4, b"tail")
    assert w.size == 8
    assert w.finish().sha256 == _sha(b"\x00\x00\x00\x00tail")


def test_empty_writes_change_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"abc")
    w.write(100, b"")
    assert w.size == 3
    assert w.finish().sha256 == _sha(b"abc")


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"partial")
    w.abort()
    w.abort()
    assert w.closed
    assert list(store.tmp.iterdir()) == [] and list(store.iter_hashes()) == []


def test_a_closed_writer_refuses_more_work(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    finished = store.begin_write()
    finished.write(0, b"x")
    finished.finish()
    aborted = store.begin_write()
    aborted.abort()
    for writer in (finished, aborted):
        with pytest.raises(ValueError, match="closed"):
            writer.write(1, b"y")
        with pytest.raises(ValueError, match="closed"):
            writer.finish()
    assert list(store.iter_hashes()) == [_sha(b"x")]


def test_negative_offsets_are_refused(tmp_path: Path) -> None:
    w = FileBlobStore(tmp_path).begin_write()
    with pytest.raises(ValueError, match="negative"):
        w.write(-1, b"x")
    assert w.size == 0


def test_sweep_removes_only_stale_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    kept = store.begin_write()
    kept.write(0, b"kept")
    info = kept.finish()
    old, fresh = store.begin_write(), store.begin_write()
    os.utime(old.temp_path, (1000, 1000))
    now = fresh.temp_path.stat().st_mtime
    assert store.sweep_temp(older_than_seconds=3600, now=now) == 1
    assert list(store.tmp.iterdir()) == [fresh.temp_path]
    assert store.exists(info.sha256)  # blobs are never temp files
    assert store.sweep_temp(older_than_seconds=3600, now=now) == 0


def test_iter_hashes_lists_every_blob_and_skips_strays(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    expected = set()
    for content in (b"a", b"b", b"c"):
        w = store.begin_write()
        w.write(0, content)
        expected.add(w.finish().sha256)
    (store.blobs / "README").write_text("not a blob")
    misplaced = store.blobs / "00" / "00"
    misplaced.mkdir(parents=True)
    (misplaced / ("f" * 64)).write_bytes(b"in the wrong folder")
    assert set(store.iter_hashes()) == expected


def test_delete_removes_a_blob_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"gone soon")
    digest = w.finish().sha256
    assert store.delete(digest) is True
    assert store.delete(digest) is False
    assert not store.exists(digest)
    with pytest.raises(BlobNotFound):
        store.size(digest)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "A" * 64, "abc", "0" * 63 + "/", "0" * 65, " " + "0" * 63]
)
def test_hashes_that_are_no_sha256_are_refused(tmp_path: Path, bad: str) -> None:
    store = FileBlobStore(tmp_path)
    for call in (store.path_for, store.open, store.exists, store.delete, store.size):
        with pytest.raises(ValueError, match="SHA-256"):
            call(bad)


def test_missing_blob_raises_not_found(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        store.open("0" * 64)
    with pytest.raises(BlobNotFound):
        store.size("0" * 64)


def test_adopt_takes_only_files_from_the_temp_folder(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "store")
    built = store.new_temp_path(".zip")
    built.write_bytes(b"zip")
    info = store.adopt(built)
    assert info.sha256 == _sha(b"zip") and info.size == 3
    assert store.exists(info.sha256) and not built.exists()
    elsewhere = tmp_path / "x"
    elsewhere.write_bytes(b"x")
    with pytest.raises(ValueError):
        store.adopt(elsewhere)
    assert elsewhere.exists()


def test_finish_is_atomic_the_blob_path_appears_only_at_finish(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = random.Random(1).randbytes(2 * 1024 * 1024 + 7)
    digest = _sha(data)
    w = store.begin_write()
    for offset in range(0, len(data), 65536):
        w.write(offset, data[offset : offset + 65536])
        assert not store.path_for(digest).exists()
        assert not store.exists(digest)
    assert w.temp_path.stat().st_size == len(data)
    info = w.finish()
    assert info.sha256 == digest
    assert store.path_for(digest).read_bytes() == data
    assert not w.temp_path.exists()


def test_a_failed_rename_leaves_neither_blob_nor_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"never stored")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        w.finish()
    assert w.closed
    assert list(store.tmp.iterdir()) == []
    assert list(store.iter_hashes()) == []


def test_abort_after_finish_keeps_the_blob(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    w = store.begin_write()
    w.write(0, b"kept")
    info = w.finish()
    w.abort()
    assert store.path_for(info.sha256).read_bytes() == b"kept"


def test_sweep_spares_a_temp_file_that_is_still_being_written(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    writing = store.begin_write()
    os.utime(writing.temp_path, (1000, 1000))
    writing.write(0, b"more")  # a write renews the mtime
    now = writing.temp_path.stat().st_mtime + 10
    assert store.sweep_temp(older_than_seconds=3600, now=now) == 0
    assert writing.finish().sha256 == _sha(b"more")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0" * 64 + "\n",
        "0" * 62 + "/x",
        "g" * 64,
        "\x00" * 64,
        "０" * 64,  # fullwidth zeros
        "ab/../" + "0" * 58,
    ],
)
def test_more_hashes_that_are_no_sha256_are_refused(tmp_path: Path, bad: str) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path_for(bad)


def test_long_uploads_are_flushed_behind_while_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobstore, "WRITE_BEHIND", 1000)
    flushed: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(blobstore.os, "fdatasync", lambda fd: (flushed.append(fd), real(fd)))
    store = FileBlobStore(tmp_path)
    writer = store.begin_write()
    for i in range(5):
        writer.write(i * 600, b"x" * 600)
        writer._join_behind()  # one flush at a time; wait so the count is exact
    info = writer.finish()
    assert len(flushed) == 2  # at 1,200 and at 2,400 bytes: each 1,000 or more past the last
    assert info.size == 3000


def test_an_error_of_a_flush_behind_fails_the_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobstore, "WRITE_BEHIND", 1000)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobstore.os, "fdatasync", failing)
    store = FileBlobStore(tmp_path)
    writer = store.begin_write()
    writer.write(0, b"y" * 1500)
    with pytest.raises(OSError, match="Input/output"):
        writer.finish()
    assert list(store.iter_hashes()) == []
    assert not writer.temp_path.exists()
