"""File-system helpers shared by the local blob store and the spool: private folders,
durable folder entries, hashing an open file, listing a folder that may vanish."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

DIR_MODE = 0o700
CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder durable (a rename or unlink in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create path and missing parents with mode 0700; fsync each new entry's parent.

    ``Path.mkdir(parents=True, mode=...)`` gives the mode to the last folder only,
    and a new folder is only durable once its parent's entry is.
    """
    for folder in new_dirs(path):
        fsync_dir(folder)


def new_dirs(path: Path) -> list[Path]:
    """Create path and missing parents with mode 0700, without waiting for the disk:
    the folders whose entries changed (each new folder's parent), deepest first, for
    the caller to fsync once it has made its own change in the new folder."""
    if path.is_dir():
        return []
    changed = new_dirs(path.parent)
    # Made by another writer in between: its entry may not be durable yet either.
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
    return [path.parent, *changed]


def sha256_of_fd(fd: int) -> str:
    """The SHA-256 of everything in an open file, read with pread (the offset stays)."""
    h = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def scan(path: Path) -> list[os.DirEntry[str]]:
    """The entries of a folder; none when it was removed under us or never created."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []
