"""The local backend beyond the Protocol: where blobs live, modes, atomic placement,
write-behind. What every backend does is in ``test_blob_protocol.py``."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from qprserver.storage import spool as spool_module
from qprserver.storage.local import FileBlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spool_files(store: FileBlobStore) -> list[Path]:
    return sorted(store.spool.folder.iterdir())


def test_a_finished_blob_is_a_read_only_file_under_its_hash(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    writer = store.begin_write()
    writer.write(0, b"hello world")
    info = writer.finish()
    path = store.path_for(info.sha256)
    assert path == tmp_path / "blobs" / info.sha256[:2] / info.sha256[2:4] / info.sha256
    assert path.read_bytes() == b"hello world"
    assert path.stat().st_mode & 0o777 == 0o400
    assert _spool_files(store) == []


def test_store_folders_are_private_to_the_service_user(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "data", node_id="n1")
    store.begin_write().finish()
    digest = _sha(b"")
    folders = [store.root, store.blobs, store.spool.folder, store.spool.folder.parent]
    folders += [store.path_for(digest).parent, store.path_for(digest).parent.parent]
    assert all(folder.stat().st_mode & 0o777 == 0o700 for folder in folders)


def test_uploads_in_progress_are_files_in_the_node_spool(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    writer = store.begin_write()
    writer.write(0, b"%PDF-")
    (path,) = _spool_files(store)
    assert path.parent == tmp_path / "spool" / "n1"
    assert path.name.startswith("upload-") and path.suffix == ".part"
    assert writer.read_head(5) == b"%PDF-"  # gathered writes reach the file first
    assert path.read_bytes() == b"%PDF-"
    assert writer.detach() == f"n1/{path.name}"


def test_the_first_copy_of_a_content_is_kept(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    first = store.begin_write()
    first.write(0, b"same")
    info = first.finish()
    inode = store.path_for(info.sha256).stat().st_ino
    second = store.begin_write()
    second.write(0, b"same")
    assert second.finish() == info
    assert store.path_for(info.sha256).stat().st_ino == inode
    assert _spool_files(store) == []


def test_iteration_skips_stray_and_misplaced_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
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
    assert {b.sha256 for b in store.iter_blobs()} == expected


def test_finish_is_atomic_the_blob_path_appears_only_at_finish(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    data = random.Random(1).randbytes(2 * 1024 * 1024 + 7)
    digest = _sha(data)
    w = store.begin_write()
    for offset in range(0, len(data), 65536):
        w.write(offset, data[offset : offset + 65536])
        assert not store.path_for(digest).exists()
        assert not store.exists(digest)
    (spooled,) = _spool_files(store)
    assert w.size == len(data)
    w.read_head(1)  # writes what is gathered
    assert spooled.stat().st_size == len(data)
    assert w.finish().sha256 == digest
    assert store.path_for(digest).read_bytes() == data
    assert not spooled.exists()


def test_a_failed_rename_leaves_neither_blob_nor_spool_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    w = store.begin_write()
    w.write(0, b"never stored")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        w.finish()
    assert w.closed
    assert _spool_files(store) == []
    assert list(store.iter_hashes()) == []


def test_a_reader_reads_through_its_own_file_descriptor(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    w = store.begin_write()
    w.write(0, b"descriptor")
    reader = store.open_reader(w.finish().sha256)
    fd = reader.fileno()
    assert fd is not None and os.pread(fd, 4, 0) == b"desc"
    reader.close()
    assert reader.fileno() is None
    with pytest.raises(OSError):
        os.fstat(fd)


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
    store = FileBlobStore(tmp_path, node_id="n1")
    with pytest.raises(ValueError, match="SHA-256"):
        store.path_for(bad)


def test_long_uploads_are_flushed_behind_while_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "WRITE_BEHIND", 1000)
    flushed: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(spool_module.os, "fdatasync", lambda fd: (flushed.append(fd), real(fd)))
    store = FileBlobStore(tmp_path, node_id="n1")
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
    monkeypatch.setattr(spool_module, "WRITE_BEHIND", 1000)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(spool_module.os, "fdatasync", failing)
    store = FileBlobStore(tmp_path, node_id="n1")
    writer = store.begin_write()
    writer.write(0, b"y" * 1500)
    with pytest.raises(OSError, match="Input/output"):
        writer.finish()
    assert list(store.iter_hashes()) == []
    assert _spool_files(store) == []


def test_a_blob_collected_by_the_sweep_is_moved_aside_into_the_spool_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    w = store.begin_write()
    w.write(0, b"collected")
    digest = w.finish().sha256
    renamed: list[tuple[str, str]] = []
    real = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renamed.append((str(a), str(b))), real(a, b)))
    assert store.delete_if_older(digest, store.stat(digest).stored_at + 60)
    ((source, aside),) = renamed
    assert source == str(store.path_for(digest))
    assert Path(aside).parent == store.spool.folder and not Path(aside).exists()
