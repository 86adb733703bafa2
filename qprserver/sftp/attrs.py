"""What a client sees of files and folders: SFTP attributes and ``ls -l`` lines.

The tree is virtual: folders are read-only (``/outbox`` writable), documents are
read-only files owned by the account, uploads in progress writable files. Times
are whole seconds, owner and group are the IK and ``qpr``.
"""

from __future__ import annotations

import functools
import stat as statmod
import time

import asyncssh
from asyncssh import SFTPAttrs, SFTPName, SFTPVFSAttrs

from qprserver.exchange import mailbox, partials, quota
from qprserver.sftp import compat
from qprserver.sftp.handles import UploadHandle

DIR_RO = statmod.S_IFDIR | 0o500
DIR_RW = statmod.S_IFDIR | 0o700
FILE_RO = statmod.S_IFREG | 0o400
FILE_RW = statmod.S_IFREG | 0o600
ST_RDONLY = 0x1  # statvfs flag, as in OpenSSH's statvfs@openssh.com


def dir_attrs(writable: bool, mtime: float) -> SFTPAttrs:
    """A folder of the virtual tree."""
    return SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_DIRECTORY,
        size=0,
        uid=0,
        gid=0,
        permissions=DIR_RW if writable else DIR_RO,
        atime=int(mtime),
        mtime=int(mtime),
        nlink=2,
    )


def file_attrs(size: int, mtime: float, writable: bool = False) -> SFTPAttrs:
    """A file: a document (read-only) or an upload (writable)."""
    return SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_REGULAR,
        size=size,
        uid=0,
        gid=0,
        permissions=FILE_RW if writable else FILE_RO,
        atime=int(mtime),
        mtime=int(mtime),
        nlink=1,
    )


def entry_attrs(entry: mailbox.Entry) -> SFTPAttrs:
    """A document, bundle or receipt of a mailbox folder."""
    return file_attrs(entry.size, entry.mtime.timestamp())


def upload_attrs(handle: UploadHandle) -> SFTPAttrs:
    """An upload in progress: its size so far, the time a client set or now."""
    mtime = handle.mtime if handle.mtime is not None else time.time()
    return file_attrs(handle.writer.size, mtime, writable=True)


def outbox_attrs(found: UploadHandle | partials.Partial | mailbox.Entry) -> SFTPAttrs:
    """What a depositor's /outbox shows at a name: an upload, a partial file, a document."""
    if isinstance(found, UploadHandle):
        return upload_attrs(found)
    if isinstance(found, partials.Partial):
        return file_attrs(found.size, found.mtime.timestamp(), writable=True)
    return entry_attrs(found)


def vfs_attrs(space: quota.Space) -> SFTPVFSAttrs:
    """statvfs of the account's own space (quota.py); the host's disks are nobody's business."""
    return SFTPVFSAttrs(
        bsize=quota.BLOCK,
        frsize=quota.BLOCK,
        blocks=space.blocks(space.total),
        bfree=space.blocks(space.free),
        bavail=space.blocks(space.free),
        files=0,
        ffree=0,
        favail=0,
        fsid=0,
        flags=ST_RDONLY if space.read_only else 0,
        namemax=255,
    )


# Listings build one name per entry, up to hundreds of thousands: the attributes are
# copied from a template (asyncssh's keyword constructor costs twice as much) and the
# ``ls -l`` line is made here, in the layout of asyncssh's ``format_longname``, with
# the date text computed once per minute rather than per entry.
_LISTED = file_attrs(0, 0)
_LISTED_FIELDS = tuple((name, getattr(_LISTED, name)) for name in compat.attrs_fields())
HALF_YEAR = 365 * 24 * 60 * 60 / 2


def _listed_attrs(size: int, mtime: int) -> SFTPAttrs:
    attrs = SFTPAttrs.__new__(SFTPAttrs)
    for name, value in _LISTED_FIELDS:
        setattr(attrs, name, value)
    attrs.size = size
    attrs.atime = attrs.mtime = mtime
    return attrs


@functools.lru_cache(maxsize=4096)
def _ls_date(minute: int, recent: bool) -> str:
    t = time.localtime(minute * 60)
    day = time.strftime("%b ", t) + str(t.tm_mday).rjust(2)
    return day + (time.strftime(" %H:%M", t) if recent else time.strftime("  %Y", t))


def listed_name(entry: mailbox.Entry, owner: str, now: float) -> SFTPName:
    """One entry of a mailbox listing, with its ``ls -l`` line as asyncssh would make it."""
    mtime = int(entry.mtime.timestamp())
    recent = now - HALF_YEAR < mtime <= now
    name = entry.name.encode("utf-8")
    longname = (
        f"-r--------    1 {owner:8s} qpr      {entry.size:>8d} {_ls_date(mtime // 60, recent):12s} "
    ).encode() + name
    return SFTPName(name, longname, _listed_attrs(entry.size, mtime))
