"""Copying blobs from one store to another (``qprserver storage migrate``).

Each blob is streamed from the source into the target's ``begin_stream`` (parts as
they come, never whole in memory), which hashes what it sends: a blob counts as
copied only when that SHA-256 is the one it is stored under. Blobs the target holds
already with the same size are skipped, so a migration cut off is simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qprserver.storage.base import BlobNotFound, BlobStore
from qprserver.storage.streams import chunks


@dataclass
class TransferReport:
    """What a run copied, found there already, could not find, or found corrupt."""

    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.corrupt)


def copy_blobs(
    source: BlobStore,
    target: BlobStore,
    hashes: Iterable[str],
    progress: Callable[[str, str], None] | None = None,
) -> TransferReport:
    """Copy every blob of hashes from source to target, verifying each (blocking).

    progress, if given, hears (hash, "copied" | "present" | "missing" | "corrupt").
    """
    report = TransferReport()
    for sha256 in sorted(set(hashes)):
        outcome = _copy_one(source, target, sha256, report)
        if progress is not None:
            progress(sha256, outcome)
    return report


def _copy_one(source: BlobStore, target: BlobStore, sha256: str, report: TransferReport) -> str:
    try:
        size = source.stat(sha256).size
    except BlobNotFound:
        report.missing.append(sha256)
        return "missing"
    try:
        if target.stat(sha256).size == size:
            report.present += 1
            return "present"
    except BlobNotFound:
        pass  # not in the target yet: copy it
    reader = source.open_reader(sha256)
    stream = target.begin_stream()
    try:
        for chunk in chunks(reader):
            stream.write(chunk)
        if stream.size != size:
            raise _Corrupt
        # A stream hashes what it sends and stores it under that hash; compare it with
        # the hash the database refers to before it becomes visible under another.
        info = stream.finish()
    except _Corrupt:
        stream.abort()
        report.corrupt.append(sha256)
        return "corrupt"
    except BaseException:
        stream.abort()
        raise
    finally:
        reader.close()
    if info.sha256 != sha256:
        # Stored under its own hash, which no row refers to (unless another document
        # has those bytes): the sweep of unreferenced blobs takes it.
        report.corrupt.append(sha256)
        return "corrupt"
    report.copied += 1
    report.copied_bytes += info.size
    return "copied"


class _Corrupt(Exception):
    """The source gave other bytes than its size says."""
