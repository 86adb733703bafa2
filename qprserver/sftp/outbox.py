"""A depositor's ``/outbox`` in one SFTP session: uploads, partial uploads, own documents.

What the depositor sees there, most recent first: uploads in progress on this
connection (open, or closed under a temp name and not yet renamed), partial uploads
kept from a dropped connection (database, any process), and its current documents
(read-only). So ``stat`` after ``put`` (paramiko's confirm), ``stat`` of a file
being written (sshfs), ``setstat`` of times (rsync, rclone, WinSCP) and a listing
answer truthfully, and ``reput``/``put -c``/``curl -C -`` find what to resume.

Names are checked when something is to be created under them: a refused name
changes nothing and the client reads why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh import SFTPAttrs

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


def _when(mtime: int) -> datetime:
    return datetime.fromtimestamp(mtime, UTC)


class Outbox:
    """The upload side of one session of a depositor."""

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

    async def names(self, folder: VPath, page: int) -> AsyncIterator[tuple[str, int, int, bool]]:
        """(name, size, mtime, writable) of everything in a folder of /outbox."""
        prefix = folder.text() + "/"
        shown: set[str] = set()
        now = int(time.time())
        for handle in list(self.state.pending.values()) + list(self.state.uploads):
            key = handle.path.text()
            rest = key[len(prefix) :]
            if key.startswith(prefix) and "/" not in rest and rest not in shown:
                shown.add(rest)
                yield rest, handle.writer.size, handle.mtime or now, True
        account = self.account
        kept = await self.ctx.db.quick_read(
            lambda reads: partials.in_folder(reads, account.id, folder.text())
        )
        for partial in kept:
            rest = partial.path[len(prefix) :]
            if rest not in shown:
                shown.add(rest)
                yield rest, partial.size, int(partial.mtime.timestamp()), True
        after = 0
        while True:
            entries = await self.ctx.db.quick_read(
                functools.partial(
                    mailbox.outbox_page,
                    account=account,
                    direct_ik=folder.direct_ik,
                    after_id=after,
                    limit=page,
                )
            )
            for entry in entries:
                if entry.name not in shown:
                    yield entry.name, entry.size, int(entry.mtime.timestamp()), False
            if len(entries) < page:
                return
            after = entries[-1].id
            self.state.touch()

    # -- attributes ----------------------------------------------------------------

    async def setstat(self, vpath: VPath, attrs: SFTPAttrs) -> None:
        """Times (and a truncation) a client sets; accepted, never an error.

        The modification time is kept on whatever the name shows (upload, partial,
        document) so a sync tool sees again what it set; permissions and owners
        mean nothing here and are ignored.
        """
        if vpath.name is None:
            return
        found = await self.find(vpath)
        if isinstance(found, UploadHandle):
            self.apply(found, attrs)
        elif attrs.mtime is None:
            return
        elif isinstance(found, partials.Partial):
            await partials.set_mtime(self.ctx.db, self.account.id, found.path, _when(attrs.mtime))
        elif isinstance(found, mailbox.Entry):
            async with self.ctx.db.session() as session:
                await mailbox.set_outbox_mtime(session, self.account, found.id, _when(attrs.mtime))

    def apply(self, handle: UploadHandle, attrs: SFTPAttrs) -> None:
        """fsetstat of an upload: its time, and a truncation (sshfs sends one for O_TRUNC)."""
        if attrs.mtime is not None:
            handle.mtime = attrs.mtime
        size = attrs.size
        if size is not None and size != handle.writer.size and not handle.writer.closed:
            if size > handle.limit:
                raise asyncssh.SFTPQuotaExceeded(
                    f"Datei größer als die erlaubten {handle.limit} Bytes"
                )
            handle.writer.truncate(size)

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
            log.warning("partial upload %s of %s is gone", kept.temp_name, self.account.ik)
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
                client_mtime=_when(handle.mtime) if handle.mtime is not None else None,
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
                _when(handle.mtime) if handle.mtime is not None else None,
                self.ctx.clock.now(),
            )
        except Exception:
            log.exception("keeping a partial upload of %s failed", self.account.ik)
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
