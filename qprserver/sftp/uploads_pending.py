"""The temp-name upload state machine of one session in a depositor's ``/outbox``.

An upload opened under its final name becomes a document when the client closes
it. One opened under a temp name (``paths.is_temp_name``: ``.part``, ``.filepart``,
rsync's ``.name.XXXXXX`` …) is parked at close and becomes a document when it is
renamed to its final name; a temp name renamed to another temp name moves. A
connection lost mid-upload leaves a partial upload (``exchange.partials``) that a
later open or rename, in any session or process, resumes; a session that ends
drops the temp uploads it parked and never renamed. What the depositor sees of all
this (``find``) is answered here too, as the open, rename and remove steps ask it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncssh

from qprserver.audit.chain import Actor
from qprserver.errors import NotFound, QprError, Rejected
from qprserver.exchange import mailbox, partials
from qprserver.exchange.folders import Folder
from qprserver.exchange.names import name_problem
from qprserver.sftp.handles import UploadHandle
from qprserver.sftp.paths import VPath, is_temp_name

if TYPE_CHECKING:
    from qprserver.db.models import Account
    from qprserver.sftp.state import ConnectionState, ServerContext

log = logging.getLogger(__name__)

FXF_APPEND = 0x04
FXF_TRUNC = 0x10
FXF_EXCL = 0x20


def when(mtime: int) -> datetime:
    """A client's modification time (Unix seconds) as an aware datetime."""
    return datetime.fromtimestamp(mtime, UTC)


class PendingUploads:
    """The uploads of one session of a depositor, from open to document (or partial)."""

    def __init__(
        self, ctx: ServerContext, state: ConnectionState, account: Account, actor: Actor
    ) -> None:
        self.ctx = ctx
        self.state = state
        self.account = account
        self.actor = actor

    # -- what is there -----------------------------------------------------------

    def in_progress(self, key: str) -> UploadHandle | None:
        """This connection's upload at key: closed under a temp name, or still open."""
        handle = self.state.pending.get(key)
        if handle is not None:
            return handle
        for open_handle in self.state.uploads:
            if not open_handle.closed and open_handle.path.text() == key:
                return open_handle
        return None

    async def find(self, vpath: VPath) -> UploadHandle | partials.Partial | mailbox.Entry | None:
        """What the depositor sees at vpath (a file in /outbox), or None."""
        assert vpath.name is not None
        key = vpath.text()
        handle = self.in_progress(key)
        if handle is not None:
            return handle
        account, direct, name = self.account, vpath.direct_ik, vpath.name

        async def work(reads: Any) -> partials.Partial | mailbox.Entry | None:
            partial = await partials.lookup(reads, account.id, key)
            if partial is not None:
                return partial
            try:
                return await mailbox.outbox_lookup(reads, account, direct, name)
            except NotFound:
                return None

        return await self.ctx.db.quick_read(work)

    # -- uploads -------------------------------------------------------------------

    def check_name(self, vpath: VPath) -> None:
        """Refuse to create anything under a name no document may have."""
        assert vpath.name is not None
        problem = name_problem(vpath.name)
        if problem is not None:
            raise asyncssh.SFTPInvalidFilename(problem)

    async def open(self, vpath: VPath, pflags: int) -> UploadHandle:
        """Start an upload, or resume this connection's or a kept one (no FXF_TRUNC)."""
        self.check_name(vpath)
        key = vpath.text()
        if pflags & FXF_EXCL and await self.find(vpath) is not None:
            raise asyncssh.SFTPFileAlreadyExists("Datei existiert bereits")
        truncate = bool(pflags & FXF_TRUNC)
        writer = None
        mtime = None
        old = self.state.pending.pop(key, None)
        if old is not None:
            if truncate:
                old.writer.abort()
            else:
                writer, mtime = old.writer, old.mtime
        elif not truncate:
            writer = await self._resume_kept(key)
        handle = UploadHandle(
            vpath,
            writer or self.ctx.blobs.begin_write(),
            self.ctx.settings.storage.max_upload_bytes,
            owner=self,
            append=bool(pflags & FXF_APPEND),
            mtime=mtime,
        )
        self.state.uploads.add(handle)
        return handle

    async def _resume_kept(self, key: str) -> Any:
        kept = await partials.claim(self.ctx.db, self.account.id, key)
        if kept is None:
            return None
        try:
            return self.ctx.blobs.resume_write(kept.temp_name)
        except (OSError, ValueError):
            log.warning("partial upload %s of %s is gone", kept.temp_name, self.account.login)
            return None

    async def close(self, handle: UploadHandle, client_gone: bool) -> None:
        """A client's close completes an upload (or parks it under its temp name)."""
        self.state.uploads.discard(handle)
        if handle.closed:
            return
        handle.closed = True
        if client_gone:
            # asyncssh closes the handles still open when a session ends; such a close
            # is no client's "done": the upload stays a partial file, never a document.
            await self.keep(handle)
            return
        assert handle.path.name is not None
        if handle.failure is None and is_temp_name(handle.path.name):
            self.park(handle.path, handle)
            return
        await self.complete(handle, handle.path)

    def park(self, vpath: VPath, handle: UploadHandle) -> None:
        # A temp upload replaced by another of the same name leaves nothing behind.
        key = vpath.text()
        old = self.state.pending.get(key)
        if old is not None and old is not handle:
            old.writer.abort()
        self.state.pending[key] = handle

    async def complete(self, handle: UploadHandle, target: VPath) -> None:
        assert target.name is not None
        writer = handle.writer
        if handle.failure is not None:
            size = writer.size
            sha256 = "" if writer.closed else await asyncio.to_thread(writer.digest)
            writer.abort()
            await self.ctx.uploads.reject(
                self.account,
                self.actor,
                self.ctx.clock.now(),
                shown=target.text().removeprefix("/outbox/"),
                reason=handle.failure,
                size=size,
                sha256=sha256,
                started=handle.opened,
            )
            raise asyncssh.SFTPFailure(f"abgelehnt: {handle.failure}")
        try:
            await self.ctx.uploads.complete(
                self.account,
                self.actor,
                self.ctx.clock.now(),
                name=target.name,
                direct_ik=target.direct_ik,
                writer=writer,
                client_mtime=when(handle.mtime) if handle.mtime is not None else None,
                started=handle.opened,
            )
        except Rejected as exc:
            raise asyncssh.SFTPFailure(f"abgelehnt: {exc}") from None
        except QprError:
            log.exception("upload could not be completed")
            raise asyncssh.SFTPFailure("upload failed") from None
        # A partial upload kept under either name is superseded by this one.
        await self._discard_kept({handle.path.text(), target.text()})

    async def _discard_kept(self, keys: set[str]) -> None:
        for key in keys:
            for temp_name in await partials.discard(self.ctx.db, self.account.id, key):
                self.ctx.blobs.remove_temp(temp_name)

    # -- cut-off uploads -----------------------------------------------------------

    def detach(self, handle: UploadHandle) -> str | None:
        """Stop an upload whose client is gone: keep its file (the temp name), or drop it.

        Nothing worth resuming (no bytes, or a refused upload) is thrown away.
        """
        handle.closed = True
        self.state.uploads.discard(handle)
        writer = handle.writer
        if writer.closed:
            return None
        if handle.failure is not None or writer.size == 0:
            writer.abort()
            return None
        handle.kept = True
        return writer.detach()

    async def record_kept(self, handle: UploadHandle, temp_name: str) -> None:
        """Record a detached upload as the depositor's partial file at its path."""
        try:
            replaced = await partials.keep(
                self.ctx.db,
                self.account.id,
                handle.path.text(),
                temp_name,
                handle.writer.size,
                when(handle.mtime) if handle.mtime is not None else None,
                self.ctx.clock.now(),
            )
        except Exception:
            log.exception("keeping a partial upload of %s failed", self.account.login)
            self.ctx.blobs.remove_temp(temp_name)
            return
        for old in replaced:
            self.ctx.blobs.remove_temp(old)

    async def keep(self, handle: UploadHandle) -> None:
        temp_name = self.detach(handle)
        if temp_name is not None:
            await self.record_kept(handle, temp_name)

    def cut_off(self, handle: UploadHandle) -> Coroutine[Any, Any, None] | None:
        """The connection is lost: detach now, record later (the caller runs the coroutine)."""
        temp_name = self.detach(handle)
        return None if temp_name is None else self.record_kept(handle, temp_name)

    # -- names -----------------------------------------------------------------------

    async def rename(self, old: VPath, new: VPath) -> None:
        """A temp upload renamed to its final name becomes a document; a temp to a temp
        name moves; anything else in /outbox stays as it is."""
        if new.folder is not Folder.OUTBOX or new.name is None or old.name is None:
            raise asyncssh.SFTPPermissionDenied("Rename not allowed here")
        self.check_name(new)
        key = old.text()
        handle = self.state.pending.pop(key, None)
        if handle is None:
            open_handle = self.in_progress(key)
            if open_handle is not None:
                # Still being written (sshfs renames open files): it completes on close.
                open_handle.path = new
                return
            handle = await self._claim_for_rename(old)
        if is_temp_name(new.name):
            handle.path = new
            self.park(new, handle)
            return
        await self.complete(handle, new)

    async def _claim_for_rename(self, old: VPath) -> UploadHandle:
        writer = await self._resume_kept(old.text())
        if writer is None:
            found = await self.find(old)
            if isinstance(found, mailbox.Entry):
                raise asyncssh.SFTPPermissionDenied("Zugestellte Dokumente bleiben, wie sie sind")
            raise asyncssh.SFTPNoSuchFile("No such file")
        return UploadHandle(
            old, writer, self.ctx.settings.storage.max_upload_bytes, owner=self, closed=True
        )

    async def remove(self, vpath: VPath) -> None:
        """Deleting an upload in progress or a partial file throws it away."""
        key = vpath.text()
        handle = self.state.pending.pop(key, None)
        if handle is not None:
            handle.writer.abort()
            return
        removed = await partials.discard(self.ctx.db, self.account.id, key)
        for temp_name in removed:
            self.ctx.blobs.remove_temp(temp_name)
        if removed:
            return
        if isinstance(await self.find(vpath), mailbox.Entry):
            raise asyncssh.SFTPPermissionDenied("Zugestellte Dokumente bleiben, wie sie sind")
        raise asyncssh.SFTPNoSuchFile("No such file")

    def exit(self) -> None:
        """Temp uploads this session closed but never renamed are thrown away; those of
        other sessions on the same connection stay theirs."""
        for key, handle in list(self.state.pending.items()):
            if handle.owner is self:
                handle.writer.abort()
                del self.state.pending[key]
