"""Per-node spools: nodes sharing one data folder never sweep each other's uploads."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest

from qprserver.config import parse_config
from qprserver.errors import ConfigError
from qprserver.storage import spool
from qprserver.storage.local import FileBlobStore
from qprserver.storage.spool import Spool, check_node_id


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_node_a_starting_leaves_node_b_uploads_in_progress_and_kept_alone(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    node_a = FileBlobStore(data, node_id="node-a")
    node_b = FileBlobStore(data, node_id="node-b")
    in_progress = node_b.begin_write()
    in_progress.write(0, b"node b is receiving this ")
    kept = node_b.begin_write()
    kept.write(0, b"cut off on node b")
    kept_name = kept.detach()
    left_by_a = node_a.begin_write()
    left_by_a.write(0, b"a killed run of node a left this")
    # Node A starts again: its start-up sweep clears everything of its own but what is
    # kept to resume (here: nothing of A's), and never looks at B's spool.
    restarted_a = FileBlobStore(data, node_id="node-a")
    assert restarted_a.sweep_temp(0, time.time() + 10, spare=frozenset({kept_name})) == 1
    assert list(restarted_a.spool.folder.iterdir()) == []
    in_progress.write(25, b"and finishes it")
    assert in_progress.finish().sha256 == _sha(b"node b is receiving this and finishes it")
    resumed = node_b.resume_write(kept_name)
    assert resumed.finish().sha256 == _sha(b"cut off on node b")


def test_a_partial_kept_on_another_node_moves_into_the_resuming_node_spool(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    node_a = FileBlobStore(data, node_id="node-a")
    node_b = FileBlobStore(data, node_id="node-b")
    writer = node_b.begin_write()
    writer.write(0, b"begun on b, ")
    name = writer.detach()
    assert name.startswith("node-b/")
    resumed = node_a.resume_write(name)  # the depositor reconnected to node a
    assert list(node_b.spool.folder.iterdir()) == []
    assert len(list(node_a.spool.folder.iterdir())) == 1
    resumed.write(12, b"ended on a")
    # Node b starting now cannot harm it: the file is in a's spool.
    assert node_b.sweep_temp(0, time.time() + 10) == 0
    assert resumed.finish().sha256 == _sha(b"begun on b, ended on a")


def test_uploads_kept_by_the_previous_layout_in_tmp_are_still_resumed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = FileBlobStore(data, node_id="n1")
    legacy = data / "tmp"
    legacy.mkdir()
    name = "upload-" + "ab" * 12 + ".part"
    (legacy / name).write_bytes(b"kept before the upgrade, ")
    resumed = store.resume_write(name)
    resumed.write(resumed.size, b"finished after it")
    assert resumed.finish().sha256 == _sha(b"kept before the upgrade, finished after it")
    assert list(legacy.iterdir()) == []


def test_the_old_tmp_folder_is_swept_only_of_stale_files_and_not_at_start(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    store = FileBlobStore(data, node_id="n1")
    legacy = data / "tmp"
    legacy.mkdir()
    stale, kept, fresh = (legacy / f"upload-{c * 24}.part" for c in "abc")
    for path in (stale, kept, fresh):
        path.write_bytes(b"x")
    for path in (stale, kept):
        os.utime(path, (1000, 1000))
    now = time.time()
    assert store.sweep_temp(0, now) == 0  # start-up: only this node's own spool
    assert store.sweep_temp(3600, now, spare=frozenset({kept.name})) == 1
    assert sorted(legacy.iterdir()) == [kept, fresh]


@pytest.mark.parametrize(
    "bad",
    ["", ".", "..", "a/b", "-a", ".hidden", "a b", "ä", "x" * 44, "a\x00", "a\n"],
)
def test_a_node_id_must_be_a_safe_folder_name(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        check_node_id(bad)
    with pytest.raises(ValueError):
        Spool(tmp_path, bad)
    with pytest.raises(ConfigError, match=r"server\.node_id"):
        parse_config({"server": {"node_id": bad or "/"}}, tmp_path / "qpr.toml")


@pytest.mark.parametrize("good", ["node-1", "sftp01.example", "N_2", "x" * 43])
def test_node_ids_that_are_safe_folder_names_are_taken(tmp_path: Path, good: str) -> None:
    assert check_node_id(good) == good
    settings = parse_config({"server": {"node_id": good}}, tmp_path / "qpr.toml")
    assert settings.server.node_id == good
    # The longest temp name still fits the 80 characters the database keeps.
    writer = FileBlobStore(tmp_path / "data", node_id=good).begin_write()
    assert len(writer.detach()) <= 80


def test_without_a_node_id_the_host_name_is_taken(tmp_path: Path) -> None:
    settings = parse_config({}, tmp_path / "qpr.toml")
    assert settings.server.node_id == socket.gethostname().split(".", 1)[0]


@pytest.mark.parametrize(
    "bad", ["other/../../x/upload-" + "a" * 24 + ".part", "../upload-" + "a" * 24 + ".part"]
)
def test_temp_names_cannot_climb_out_of_the_spool(tmp_path: Path, bad: str) -> None:
    spool = Spool(tmp_path, "n1")
    with pytest.raises(ValueError):
        spool.locate(bad)


def test_the_periodic_sweep_clears_what_a_dead_node_abandoned_but_spares_its_kept_uploads(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    dead = FileBlobStore(data, node_id="node-dead")
    abandoned = dead.begin_write()
    abandoned.write(0, b"the node died while receiving this")
    kept = dead.begin_write()
    kept.write(0, b"cut off and kept")
    kept_name = kept.detach()
    live = FileBlobStore(data, node_id="node-live")
    (data / "spool" / "stray-file").write_bytes(b"not a node's folder")
    in_progress = live.begin_write()
    in_progress.write(0, b"being written")
    later = time.time() + 7200
    assert live.sweep_temp(0, later, spare=frozenset({kept_name})) == 1  # its own only
    assert len(list(dead.spool.folder.iterdir())) == 2
    assert live.sweep_temp(3600, later, spare=frozenset({kept_name})) == 1  # the abandoned one
    assert [p.name for p in dead.spool.folder.iterdir()] == [kept_name.split("/")[1]]
    assert live.resume_write(kept_name).finish().sha256 == _sha(b"cut off and kept")


# -- gathered writes ---------------------------------------------------------------


def _counted_pwritev(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.pwritev

    def pwritev(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(sum(len(b) for b in buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(spool.os, "pwritev", pwritev)
    return calls


def test_an_upload_in_32k_writes_reaches_the_file_in_gathered_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _counted_pwritev(monkeypatch)
    store = FileBlobStore(tmp_path, node_id="n1")
    content = os.urandom(3 * spool.GATHER + 1000)
    writer = store.begin_write()
    for offset in range(0, len(content), 32768):
        writer.write(offset, content[offset : offset + 32768])
    assert writer.size == len(content)
    info = writer.finish()
    assert info.sha256 == hashlib.sha256(content).hexdigest()
    assert store.path_for(info.sha256).read_bytes() == content
    assert calls[:3] == [spool.GATHER] * 3  # 8 writes of 32 KiB each, then the rest at finish
    assert sum(calls) == len(content) - 1000  # the last two writes: one pwritev of 32 KiB + 1000
    assert len(calls) <= 4


def test_out_of_order_writes_and_rewrites_end_as_the_same_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    content = bytearray(os.urandom(200_000))
    writer = store.begin_write()
    for offset in (65536, 0, 32768, 131072, 98304, 196608, 163840):
        writer.write(offset, bytes(content[offset : offset + 32768]))
    content[1000:1010] = b"x" * 10
    writer.write(1000, b"x" * 10)  # a rewrite of gathered bytes
    chunk = bytearray(b"y" * 5)
    writer.write(199_995, chunk)  # not bytes: the writer keeps a copy
    chunk[:] = b"zzzzz"
    content[199_995:] = b"y" * 5
    assert writer.read_head(20) == bytes(content[:20])
    with writer.open_written() as written:
        assert written.read() == bytes(content)
    assert writer.digest() == hashlib.sha256(content).hexdigest()
    assert writer.finish().sha256 == hashlib.sha256(content).hexdigest()


def test_truncate_and_detach_write_what_is_gathered_first(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    writer = store.begin_write()
    writer.write(0, b"a" * 1000)
    writer.write(1000, b"b" * 1000)
    writer.truncate(1500)
    writer.write(1500, b"c" * 10)
    name = writer.detach()
    resumed = store.resume_write(name)
    assert resumed.size == 1510
    assert resumed.read_head(2000) == b"a" * 1000 + b"b" * 500 + b"c" * 10


def test_a_failed_gathered_write_fails_the_upload_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileBlobStore(tmp_path, node_id="n1")
    writer = store.begin_write()
    writer.write(0, b"a" * 1000)
    writer.write(1000, b"b" * 1000)

    def full(fd: int, buffers: list[bytes], offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool.os, "pwritev", full)
    with pytest.raises(OSError, match="No space"):
        writer.finish()
    assert writer.closed
    assert list((tmp_path / "spool" / "n1").iterdir()) == []
    assert list(store.iter_hashes()) == []
