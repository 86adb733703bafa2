"""A bundle above 2 GiB is written with flat memory and opens as ZIP64."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from qprserver.exchange.bundles import Member, write_zip
from qprserver.storage.local import FileBlobStore
from tests.conftest import BACKEND

MIB = 1024 * 1024
MEMBER = 768 * MIB  # three members: 2.25 GiB, so offsets pass the 2 GiB ZIP64 limit

pytestmark = pytest.mark.skipif(
    BACKEND != "sqlite",
    reason="storage only, no database involved: runs once, in the SQLite pass",
)


def _sparse_blob(store: FileBlobStore, marker: bytes) -> str:
    """A large blob that costs no disk: a hole with a marker at the end."""
    writer = store.begin_write()
    writer.truncate(MEMBER - len(marker))
    writer.write(MEMBER - len(marker), marker)
    return writer.finish().sha256


def test_a_bundle_above_2_gib_is_built_with_flat_memory_and_opens_as_zip64(
    tmp_path: Path,
) -> None:
    store = FileBlobStore(tmp_path / "data")
    at = datetime(2026, 11, 3, 10, tzinfo=UTC)
    members = [
        Member(
            f"51051234{i}_gross.pdf",
            _sparse_blob(store, b"%%EOF" + bytes([i])),
            MEMBER,
            "pruefbericht",
            "510512349",
            1,
            at,
            "190500027",
        )
        for i in range(3)
    ]
    tracemalloc.start()
    try:
        info = write_zip(store, members, ZoneInfo("Europe/Berlin"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * MIB
    assert info.size > 2 * 1024 * MIB
    path = store.path_for(info.sha256)
    with path.open("rb") as handle:
        handle.seek(-4096, os.SEEK_END)
        tail = handle.read()
    # The central directory starts beyond the 2 GiB limit: a ZIP64 end record is needed.
    assert b"PK\x06\x06" in tail
    with zipfile.ZipFile(path) as archive:
        third = archive.getinfo(members[2].arcname)
        assert third.file_size == MEMBER
        with archive.open(third) as handle:
            handle.seek(MEMBER - 6)
            assert handle.read() == b"%%EOF\x02"
    os.remove(path)
