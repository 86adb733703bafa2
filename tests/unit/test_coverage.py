"""Byte ranges: merging, covering, storing; a download handle's record of what it served."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from qprserver.exchange import coverage
from qprserver.sftp.handles import DownloadHandle
from qprserver.storage.local import LocalBlobReader


def test_ranges_that_overlap_or_touch_merge_and_empty_ones_vanish() -> None:
    assert coverage.merge([(10, 20), (0, 5), (5, 10), (30, 30), (15, 25)]) == [(0, 25)]
    assert coverage.merge([(0, 5), (6, 9)]) == [(0, 5), (6, 9)]


def test_only_ranges_from_zero_to_the_size_cover_a_file() -> None:
    assert coverage.covers([(0, 100)], 100)
    assert not coverage.covers([(0, 99)], 100)
    assert not coverage.covers([(1, 100)], 100)
    assert not coverage.covers([], 100)
    assert coverage.covers([], 0)


def test_stored_ranges_read_back_and_garbage_is_dropped() -> None:
    ranges = [(0, 5), (7, 1 << 40)]
    assert coverage.decode(coverage.encode(ranges)) == ranges
    assert coverage.decode("0-5,x-9,,7-8") == [(0, 5), (7, 8)]


def test_at_most_max_ranges_are_kept() -> None:
    scattered = [(2 * i, 2 * i + 1) for i in range(coverage.MAX_RANGES + 50)]
    assert len(coverage.merge(scattered)) == coverage.MAX_RANGES


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=30))
def test_merging_keeps_exactly_the_bytes_of_the_ranges(ranges: list[tuple[int, int]]) -> None:
    merged = coverage.merge(ranges)
    expected = {b for start, end in ranges for b in range(start, end)}
    assert {b for start, end in merged for b in range(start, end)} == expected
    assert all(a[1] < b[0] for a, b in itertools.pairwise(merged))


def _handle(tmp_path: Path, size: int) -> DownloadHandle:
    path = tmp_path / "blob"
    path.write_bytes(bytes(size))
    return DownloadHandle(LocalBlobReader(os.open(path, os.O_RDONLY)), size, 1, "0" * 64, "x.pdf")


def test_a_handle_read_in_order_covers_its_file(tmp_path: Path) -> None:
    handle = _handle(tmp_path, 1000)
    for offset in range(0, 1000, 300):
        handle.read(offset, 300)
    assert handle.ranges() == [(0, 1000)] and handle.complete
    handle.close()


def test_a_handle_remembers_reads_out_of_order_and_short_ones(tmp_path: Path) -> None:
    handle = _handle(tmp_path, 1000)
    handle.read(500, 200)
    handle.read(900, 500)  # past the end: 100 bytes served
    handle.read(0, 100)
    assert handle.ranges() == [(0, 100), (500, 700), (900, 1000)]
    assert not handle.complete
    handle.read(100, 400)
    handle.read(700, 200)
    assert handle.complete
    handle.close()


def test_a_handle_read_only_beyond_the_end_served_nothing(tmp_path: Path) -> None:
    handle = _handle(tmp_path, 10)
    assert handle.read(10, 5) == b"" and handle.read(2**64 - 1, 5) == b""
    assert handle.ranges() == [] and not handle.complete
    handle.close()


def test_a_handle_reading_scattered_bytes_keeps_bounded_state(tmp_path: Path) -> None:
    handle = _handle(tmp_path, 100_000)
    for offset in range(0, 100_000, 7):
        handle.read(offset, 1)
    assert len(handle.ranges()) == coverage.MAX_RANGES
    handle.close()
