"""The file-system backend of the ``BlobStore`` Protocol; the one module that knows
where a blob lives.

Layout under the data folder: ``blobs/ab/cd/<64 hex>``, and this node's spool
(``spool/<node id>/``, ``storage/spool.py``) on the same file system, so the final
rename of an upload is atomic. A blob becomes visible only after its spool file is
fsynced, renamed into place and the folder fsynced, so a killed server leaves spool
files behind, never a half-written blob. Paths are derived from validated hashes,
never from user input. Blob files are read-only; their mtime is when the content was
stored (or stored again), which the sweep of unreferenced blobs goes by.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from qprserver.storage.base import BlobNotFound, BlobStat, StoreCheck, check_hash
from qprserver.storage.files import fsync_dir, make_dirs, new_dirs, scan
from qprserver.storage.spool import Spool, SpoolStream, SpoolWriter, default_node_id

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")


class LocalBlobReader:
    """A blob file opened for reading: a file descriptor, read with ``pread``."""

    __slots__ = ("_fd", "_size")

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._size: int | None = None

    @property
    def size(self) -> int:
        """The blob's size, asked of the file system once (opening costs no ``fstat``)."""
        if self._size is None:
            self._size = os.fstat(self._open_fd()).st_size
        return self._size

    def pread(self, offset: int, n: int) -> bytes:
        return os.pread(self._open_fd(), n, offset)

    def fileno(self) -> int | None:
        return self._fd

    async def ready(self, offset: int, n: int) -> None:
        return  # a file descriptor: pread never waits on the network

    def _open_fd(self) -> int:
        if self._fd is None:
            raise ValueError("blob reader is closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileBlobStore:
    """Blobs as read-only files under one data folder; writes through this node's spool."""

    def __init__(self, root: Path, node_id: str | None = None) -> None:
        self.root = root
        self.blobs = root / "blobs"
        make_dirs(self.blobs)
        self.spool = Spool(root, node_id or default_node_id())

    # -- writing ----------------------------------------------------------------

    def begin_write(self) -> SpoolWriter:
        """Start a new blob in a fresh spool file (``spool/<node>/upload-<random>.part``)."""
        return self.spool.new_writer(self.place)

    def begin_stream(self) -> SpoolStream:
        """Start a blob written in order (a bundle): a spool file like any upload."""
        return SpoolStream(self.begin_write())

    def resume_write(self, temp_name: str) -> SpoolWriter:
        """Reopen a kept spool file (``detach``) to write on; FileNotFoundError if gone."""
        return self.spool.resume_writer(temp_name, self.place)

    def remove_temp(self, temp_name: str) -> None:
        """Remove a kept spool file; nothing if it is gone already."""
        self.spool.remove(temp_name)

    def sweep_temp(
        self, older_than_seconds: float, now: float, spare: frozenset[str] = frozenset()
    ) -> int:
        """Remove this node's spool files untouched for older_than_seconds (``Spool.sweep``)."""
        return self.spool.sweep(older_than_seconds, now, spare)

    def place(self, temp_path: Path, sha256: str) -> None:
        """Rename a fsynced spool file into its content address; keep an existing copy.

        The caller vouches that sha256 is the file's hash.
        """
        target = self.path_for(sha256)
        try:
            # Stored once: the same content is already durable there. Touching it
            # restarts the grace period of the sweep of unreferenced blobs for the
            # reference the caller is about to commit (see ``delete_if_older``).
            os.utime(target)
        except FileNotFoundError:
            pass  # not stored yet, or collected a moment ago: store this copy
        else:
            temp_path.unlink()
            return
        made = new_dirs(target.parent)
        # The mtime says when the blob was stored, not when its last byte arrived (a
        # resumed upload may end long after that): the sweep of unreferenced blobs
        # spares blobs younger than its grace period, whose rows may be on their way.
        os.utime(temp_path)
        # Blobs never change once stored; read-only guards against a stray writer.
        os.chmod(temp_path, 0o400)
        os.replace(temp_path, target)
        # The new entry, then those of the folders made for it (``blobs/ab/cd`` of a
        # young store): synced after the rename, not each before the next step, the
        # first fsync commits them all on a journaling file system and the others
        # find little left to do (here 8 instead of 11 ms with two new folders).
        for folder in (target.parent, *made):
            fsync_dir(folder)

    def close(self) -> None:
        """Nothing to release: every reader and writer holds its own file."""

    def check(self) -> list[StoreCheck]:
        """The data folder takes a durable write in this node's spool; its free space."""
        try:
            writer = self.begin_write()
            writer.write(0, b"qprserver storage check")
            writer.abort()
        except OSError as exc:
            return [StoreCheck("writable", "error", f"{self.root}: {exc.strerror}")]
        st = os.statvfs(self.root)
        free = st.f_bavail * st.f_frsize
        return [
            StoreCheck("writable", "ok", f"{self.root}"),
            StoreCheck("free space", "ok" if free > 1024**3 else "hint", f"{free} bytes free"),
        ]

    # -- reading and looking ------------------------------------------------------

    def path_for(self, sha256: str) -> Path:
        """Where the blob with this hash lives; ValueError for anything but a SHA-256.

        For this module and tests of the local backend only: nothing else in
        qprserver may depend on blobs being files.
        """
        h = check_hash(sha256)
        return self.blobs / h[:2] / h[2:4] / h

    def open_reader(self, sha256: str) -> LocalBlobReader:
        """Open a stored blob for reading; BlobNotFound if absent."""
        h = check_hash(sha256)
        # ``path_for`` as a string: pathlib's joins cost more than the open (one per download).
        path = f"{self.blobs}/{h[:2]}/{h[2:4]}/{h}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        return LocalBlobReader(fd)

    def stat(self, sha256: str) -> BlobStat:
        """Size and time stored of a blob; BlobNotFound if absent."""
        try:
            st = self.path_for(sha256).stat()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        return BlobStat(sha256, st.st_size, st.st_mtime)

    def exists(self, sha256: str) -> bool:
        """True when a blob with this hash is stored."""
        return self.path_for(sha256).is_file()

    def iter_blobs(self) -> Iterator[BlobStat]:
        """Every stored blob with its size and time stored; stray files are skipped."""
        for entry in self._entries():
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while we looked
            yield BlobStat(entry.name, st.st_size, st.st_mtime)

    def iter_hashes(self) -> Iterator[str]:
        """Every stored hash, without asking the file system for more than the names."""
        for entry in self._entries():
            yield entry.name

    def _entries(self) -> Iterator[os.DirEntry[str]]:
        """The blob files, walking ``blobs/ab/cd/``."""
        for first in scan(self.blobs):
            if not (first.is_dir(follow_symlinks=False) and _HEX2.fullmatch(first.name)):
                continue
            for second in scan(Path(first.path)):
                if not (second.is_dir(follow_symlinks=False) and _HEX2.fullmatch(second.name)):
                    continue
                prefix = first.name + second.name
                for entry in scan(Path(second.path)):
                    name = entry.name
                    if (
                        _HEX64.fullmatch(name)
                        and name.startswith(prefix)
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield entry

    # -- removing -----------------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        """Remove a blob durably; False if it was not there."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    def delete_if_older(self, sha256: str, cutoff: float) -> bool:
        """Remove a blob stored (or touched by ``place``) before ``cutoff``, a Unix time.

        False when it is newer or gone. The blob is first moved aside (into this
        node's spool, same file system) and its mtime read again there: a ``place``
        of the same content that touched it in between gets it back, and one that
        comes after the move finds no file and stores its own copy, so an upload
        about to commit never loses its blob to the sweep.
        """
        path = self.path_for(sha256)
        aside = self.spool.aside()
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            os.rename(path, aside)
        except FileNotFoundError:
            return False  # another sweeper was faster
        if aside.stat().st_mtime >= cutoff:
            with contextlib.suppress(FileExistsError):  # a fresh copy took the place
                os.link(aside, path)
            os.unlink(aside)
            return False
        os.unlink(aside)
        fsync_dir(path.parent)
        return True
