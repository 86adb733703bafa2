"""The SFTP session: client requests translated into mailbox and upload calls.

Every request is checked against the logged-in account's folders (``paths.parse``
fails closed), domain errors become SFTP status codes here and only here, and no
exception text of the backend ever reaches the client.

Its lines (just over 400) are the SFTP request handlers themselves, one method per
request type that asyncssh dispatches to this class; attribute formatting lives in
``attrs.py``, the failure policy in ``guard.py``, the depositor's view in ``outbox.py``,
the temp-name upload state machine in ``uploads_pending.py`` and every private asyncssh
hook in ``compat.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh import FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_WRITE, SFTPAttrs, SFTPName, SFTPVFSAttrs

from qprserver.audit.chain import Actor
from qprserver.errors import NotFound
from qprserver.exchange import mailbox, quota
from qprserver.exchange.folders import BLOB_FOLDERS, DELIVERY_FOLDERS, Folder
from qprserver.sftp import compat
from qprserver.sftp.attrs import (
    dir_attrs,
    entry_attrs,
    file_attrs,
    listed_name,
    outbox_attrs,
    upload_attrs,
    vfs_attrs,
)
from qprserver.sftp.guard import guarded
from qprserver.sftp.handles import DownloadHandle, MemoryHandle, UploadHandle
from qprserver.sftp.outbox import Outbox
from qprserver.sftp.paths import BadName, BadPath, VPath, normalise, parse
from qprserver.storage.base import BlobNotFound

if TYPE_CHECKING:
    from qprserver.db.models import Account
    from qprserver.sftp.state import ConnectionState, ServerContext

log = logging.getLogger(__name__)

# Replies longer than this are cut short (a short read is legal SFTP): asyncssh
# advertises it as the read limit, and the client's packet limit is about as large.
MAX_READ = 4 * 1024 * 1024

PAGE = 500
DRAIN_TIMEOUT = 60.0


class MailboxSFTPServer(asyncssh.SFTPServer):
    """One SFTP session of one logged-in account."""

    def __init__(self, chan: Any, ctx: ServerContext, state: ConnectionState) -> None:
        super().__init__(chan)
        self.ctx = ctx
        self.state = state
        assert state.account is not None
        self.account: Account = state.account
        self.folders = mailbox.folders_for(self.account)
        self.actor = Actor(self.account.login, state.peer)
        self.outbox = Outbox(ctx, state, self.account, self.actor)
        self.started = time.time()
        self.open_handles = 0
        self.max_handles = ctx.settings.security.max_handles_per_session
        self.max_buffer = ctx.settings.security.max_write_buffer
        # Reads wait (``_drain``) above this many queued reply bytes until a quarter
        # is left: a session holds at most about that much, however many reads a
        # client keeps in flight (OpenSSH: 64 × 256 KiB).
        chan.set_write_buffer_limits(high=self.max_buffer, low=self.max_buffer // 4)
        self._ended = False
        self._parsed: tuple[bytes | None, VPath] = (None, VPath())  # the last path parsed
        ctx.sessions.opened()

    # -- helpers ---------------------------------------------------------------

    def _parse(self, path: bytes, *, creating: bool = False) -> VPath:
        self.state.touch()
        if path == self._parsed[0]:
            # The same path again (an ``mget`` sends lstat, stat and open for each file):
            # parsing depends on nothing but the path and the session's folders.
            return self._parsed[1]
        try:
            vpath = parse(path, self.folders)
        except BadName as exc:
            if creating:
                # Something is to be made under this name: say why it cannot be.
                raise asyncssh.SFTPInvalidFilename(str(exc)) from None
            raise asyncssh.SFTPNoSuchFile("No such file") from None
        except BadPath:
            raise asyncssh.SFTPNoSuchFile("No such file") from None
        self._parsed = (path, vpath)
        return vpath

    def map_path(self, path: bytes) -> bytes:
        # Nothing of the real file system is ever reachable through this session.
        raise asyncssh.SFTPPermissionDenied("Permission denied")

    def format_user(self, uid: int | None) -> str:
        return self.account.login

    def format_group(self, gid: int | None) -> str:
        return "qpr"

    async def _lookup(self, vpath: VPath) -> mailbox.Entry:
        assert vpath.folder is not None and vpath.name is not None
        folder, name = vpath.folder, vpath.name
        try:
            return await self.ctx.db.quick_read(
                lambda reads: mailbox.lookup(reads, self.account, folder, name)
            )
        except NotFound:
            raise asyncssh.SFTPNoSuchFile("No such file") from None

    # -- attributes -------------------------------------------------------------

    async def _attrs(self, vpath: VPath) -> SFTPAttrs:
        if vpath.folder is None:
            return dir_attrs(False, self.started)
        if vpath.is_dir:
            return dir_attrs(vpath.folder is Folder.OUTBOX, self.started)
        if vpath.folder is Folder.OUTBOX:
            found = await self.outbox.find(vpath)
            if found is None:
                raise asyncssh.SFTPNoSuchFile("No such file")
            return outbox_attrs(found)
        return entry_attrs(await self._lookup(vpath))

    @guarded
    async def stat(self, path: bytes) -> SFTPAttrs:
        return await self._attrs(self._parse(path))

    @guarded
    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self._attrs(self._parse(path))

    @guarded
    def fstat(self, file_obj: object) -> SFTPAttrs:
        self.state.touch()
        if isinstance(file_obj, DownloadHandle | MemoryHandle):
            return file_attrs(file_obj.size, time.time())
        if isinstance(file_obj, UploadHandle):
            return upload_attrs(file_obj)
        raise asyncssh.SFTPInvalidHandle("Invalid handle")

    @guarded
    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        # Clients send times and modes after uploads (rsync and WinSCP after the rename,
        # rclone's SetModTime): in /outbox accepted, the time kept (sftp/outbox.py).
        vpath = self._parse(path)
        if vpath.folder is not Folder.OUTBOX:
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        await self.outbox.setstat(vpath, attrs)

    @guarded
    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        # There are no links, so this is setstat (asyncssh's default maps onto real paths).
        await self.setstat(path, attrs)

    @guarded
    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        self.state.touch()
        if not isinstance(file_obj, UploadHandle):
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        self.outbox.apply(file_obj, attrs)

    @guarded
    def realpath(self, path: bytes) -> bytes:
        self.state.touch()
        try:
            return normalise(path).encode("utf-8")
        except BadPath:
            raise asyncssh.SFTPNoSuchFile("No such file") from None

    @guarded
    async def statvfs(self, path: bytes) -> SFTPVFSAttrs:
        await self._attrs(self._parse(path))  # only of places that exist
        return await self._vfs()

    @guarded
    async def fstatvfs(self, file_obj: object) -> SFTPVFSAttrs:
        return await self._vfs()

    async def _vfs(self) -> SFTPVFSAttrs:
        quota_bytes = self.ctx.settings.storage.depositor_quota_bytes
        space = await self.ctx.db.quick_read(
            lambda reads: quota.space_of(reads, self.account, quota_bytes)
        )
        return vfs_attrs(space)

    # -- listings ---------------------------------------------------------------

    @guarded
    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        vpath = self._parse(path)
        if not vpath.is_dir:
            raise asyncssh.SFTPNoSuchFile("Not a directory")
        yield SFTPName(b".", attrs=await self._attrs(vpath))
        yield SFTPName(b"..", attrs=dir_attrs(False, self.started))
        if vpath.folder is None:
            for folder in self.folders:
                attrs = dir_attrs(folder is Folder.OUTBOX, self.started)
                yield SFTPName(folder.encode("utf-8"), attrs=attrs)
            return
        if vpath.folder is Folder.OUTBOX:
            async for name, size, mtime, writable in self.outbox.names(vpath, PAGE):
                yield SFTPName(name.encode("utf-8"), attrs=file_attrs(size, mtime, writable))
            return
        # Page by page, each page in a short read transaction: a mailbox of any size
        # lists in constant memory and holds no database connection between pages.
        after = 0
        folder = vpath.folder
        while True:
            entries = await self.ctx.db.quick_read(
                functools.partial(
                    mailbox.page, account=self.account, folder=folder, after_id=after, limit=PAGE
                )
            )
            now = time.time()
            for entry in entries:
                yield listed_name(entry, self.account.login, now)
            if len(entries) < PAGE:
                return
            after = entries[-1].id
            self.state.touch()

    # -- files --------------------------------------------------------------------

    @guarded
    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        vpath = self._parse(path, creating=bool(pflags & (FXF_WRITE | FXF_CREAT)))
        if self.open_handles >= self.max_handles:
            raise asyncssh.SFTPFailure("Too many open files")
        handle = await self._open(vpath, pflags)
        self.open_handles += 1
        return handle

    async def _open(self, vpath: VPath, pflags: int) -> object:
        writing = bool(pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC))
        if vpath.is_dir:
            raise asyncssh.SFTPFailure("Is a directory")
        if vpath.folder is Folder.OUTBOX:
            if writing:
                handle = await self.outbox.open(vpath, pflags)
                self.state.open_files += 1
                return handle
            found = await self.outbox.find(vpath)
            if found is None:
                raise asyncssh.SFTPNoSuchFile("No such file")
            if not isinstance(found, mailbox.Entry):
                raise asyncssh.SFTPPermissionDenied("Upload noch nicht abgeschlossen")
            entry = found  # the depositor's own document: readable, no receipt
        elif writing:
            raise asyncssh.SFTPPermissionDenied("Read-only folder")
        else:
            entry = await self._lookup(vpath)
        if entry.body is not None:
            self.state.open_files += 1
            return MemoryHandle(entry.body)
        if vpath.folder not in BLOB_FOLDERS or entry.sha256 is None:
            raise asyncssh.SFTPNoSuchFile("No such file")
        try:
            reader = self.ctx.blobs.open_reader(entry.sha256)
        except (BlobNotFound, OSError):
            log.error("blob %s of %s/%s is missing", entry.sha256, vpath.folder, entry.id)
            raise asyncssh.SFTPFailure("Document temporarily unavailable") from None
        if reader.fileno() is None:
            # Over the network (S3): the first bytes, or the news that the blob is
            # missing, come now, and the read-ahead is under way before the first read.
            try:
                await reader.ready(0, 1)
            except (BlobNotFound, OSError):
                reader.close()
                log.error("blob %s of %s/%s is unreadable", entry.sha256, vpath.folder, entry.id)
                raise asyncssh.SFTPFailure("Document temporarily unavailable") from None
        self.state.open_files += 1
        # Receipts are for deliveries; a bundle's or document's entry id is no delivery id.
        delivery_id = entry.id if vpath.folder in DELIVERY_FOLDERS else None
        download = DownloadHandle(reader, entry.size, delivery_id, entry.sha256, entry.name)
        self.ctx.receipts.track(download, self.account, self.ctx.clock.now(), self.state.peer)
        return download

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, DownloadHandle | MemoryHandle):
            if self.channel.get_write_buffer_size() > self.max_buffer:
                # A client that sends reads but does not take the replies: wait, so the
                # server never buffers without bound. The common case never awaits.
                await self._drain()
            try:
                if file_obj.__class__ is DownloadHandle and file_obj.fd is None:
                    # A reader over the network: its read-ahead has the bytes of a
                    # sequential download already; anything else is awaited here.
                    await file_obj.reader.ready(offset, min(size, MAX_READ))
                return file_obj.read(offset, min(size, MAX_READ))
            except (OSError, BlobNotFound):
                log.exception("reading a document failed")
                raise asyncssh.SFTPFailure("Read failed") from None
        raise asyncssh.SFTPPermissionDenied("Not open for reading")

    def read_now(self, file_obj: object, offset: int, size: int) -> bytes | None:
        """``read`` when it need not wait (``inline.SFTPSession``); None when it would:
        not a download or in-memory file, a reader over the network, or a send
        buffer above ``max_write_buffer``. Same bytes and errors as ``read``."""
        cls = file_obj.__class__
        if cls is DownloadHandle:
            if file_obj.fd is None:  # type: ignore[attr-defined]
                return None
        elif cls is not MemoryHandle:
            return None
        if self.channel.get_write_buffer_size() > self.max_buffer:
            return None
        try:
            data: bytes = file_obj.read(offset, min(size, MAX_READ))  # type: ignore[attr-defined]
        except (OSError, BlobNotFound):
            log.exception("reading a document failed")
            raise asyncssh.SFTPFailure("Read failed") from None
        return data

    async def _drain(self) -> None:
        """Wait until the queued replies fall to a quarter of the limit.

        asyncssh pauses the channel's session for writing above the high-water mark
        set in ``__init__`` and wakes its drain waiters at the low-water mark (not
        public: ``compat.drain``).
        """
        try:
            await asyncio.wait_for(compat.drain(self.channel), DRAIN_TIMEOUT)
        except TimeoutError:
            raise asyncssh.SFTPFailure("Client does not read") from None
        except OSError:
            raise asyncssh.SFTPConnectionLost("Connection closed") from None

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, UploadHandle):
            raise asyncssh.SFTPPermissionDenied("Not open for writing")
        try:
            file_obj.write(offset, data)
        except OverflowError as exc:
            raise asyncssh.SFTPFailure(str(exc)) from None
        except (OSError, ValueError):
            # ValueError: the upload was thrown away meanwhile (its writer is closed).
            log.exception("writing an upload failed")
            file_obj.failure = "Speicherfehler beim Empfang"
            raise asyncssh.SFTPFailure("Write failed") from None
        return len(data)

    @guarded
    async def close(self, file_obj: object) -> None:
        self.state.touch()
        self.open_handles = max(0, self.open_handles - 1)
        try:
            await self._close(file_obj)
        finally:
            # Counted down only when done: a shutdown waits for uploads still completing.
            self.state.open_files = max(0, self.state.open_files - 1)

    async def _close(self, file_obj: object) -> None:
        if isinstance(file_obj, DownloadHandle):
            file_obj.close()
            self.ctx.receipts.add_read(
                file_obj, self.account, self.ctx.clock.now(), self.state.peer
            )
            return
        if isinstance(file_obj, UploadHandle):
            gone = not file_obj.closed and self._client_gone()
            await self.outbox.close(file_obj, client_gone=gone)

    def _client_gone(self) -> bool:
        """True once the client dropped, closed, or sent EOF on the session.

        Then, or from asyncssh's clean-up of a session that ended otherwise, a close
        is no client's "done" (both private: ``compat.input_ended``,
        ``compat.in_session_cleanup``).
        """
        if self.state.lost or self.channel.is_closing():
            return True
        return compat.input_ended(self.channel) or compat.in_session_cleanup()

    @guarded
    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._parse(oldpath), self._parse(newpath, creating=True)
        if old.folder is not Folder.OUTBOX or old.name is None:
            raise asyncssh.SFTPPermissionDenied("Rename not allowed here")
        await self.outbox.rename(old, new)

    @guarded
    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    @guarded
    async def remove(self, path: bytes) -> None:
        vpath = self._parse(path)
        if vpath.folder is Folder.OUTBOX and vpath.name is not None:
            await self.outbox.remove(vpath)
            return
        if vpath.folder not in (Folder.INBOX, Folder.BUNDLES) or vpath.name is None:
            raise asyncssh.SFTPPermissionDenied("Permission denied")
        # Deleting acknowledges: a delivery moves to /archive, a bundle (or its
        # .sha256) leaves /bundles with its checksum file.
        inbox = vpath.folder is Folder.INBOX
        acknowledge = mailbox.acknowledge if inbox else mailbox.acknowledge_bundle
        try:
            async with self.ctx.db.session() as session:
                await acknowledge(
                    session, self.account, self.actor, self.ctx.clock.now(), vpath.name
                )
        except NotFound:
            raise asyncssh.SFTPNoSuchFile("No such file") from None

    @guarded
    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        vpath = self._parse(path)
        # /outbox/<IK> exists implicitly; clients that create it first get success.
        if vpath.folder is Folder.OUTBOX and vpath.direct_ik is not None and vpath.name is None:
            return
        raise asyncssh.SFTPPermissionDenied("Permission denied")

    @guarded
    def rmdir(self, path: bytes) -> None:
        self._parse(path)
        raise asyncssh.SFTPPermissionDenied("Permission denied")

    @guarded
    def readlink(self, path: bytes) -> bytes:
        self._parse(path)
        raise asyncssh.SFTPNoSuchFile("Not a link")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")

    @guarded
    def fsync(self, file_obj: object) -> None:
        # An upload is fsynced when it completes, before it becomes a document; until
        # then there is nothing a client could rely on, so nothing blocks here.
        if not isinstance(file_obj, DownloadHandle | MemoryHandle | UploadHandle):
            raise asyncssh.SFTPInvalidHandle("Invalid handle")

    def exit(self) -> None:
        if not self._ended:
            self._ended = True
            self.ctx.sessions.ended()
        self.outbox.exit()
        # OpenSSH 9 scp speaks SFTP and exits 1 without an exit status.
        with contextlib.suppress(OSError, asyncssh.Error, AttributeError):
            self.channel.exit(0)
