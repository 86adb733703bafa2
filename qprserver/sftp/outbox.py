"""A depositor's ``/outbox`` in one SFTP session: uploads, partial uploads, own documents.

What the depositor sees there, most recent first: uploads in progress on this
connection (open, or closed under a temp name and not yet renamed), partial uploads
kept from a dropped connection (database, any process), and its current documents
(read-only). So ``stat`` after ``put`` (paramiko's confirm), ``stat`` of a file
being written (sshfs), ``setstat`` of times (rsync, rclone, WinSCP) and a listing
answer truthfully, and ``reput``/``put -c``/``curl -C -`` find what to resume.

Names are checked when something is to be created under them: a refused name
changes nothing and the client reads why. The uploads themselves, from open to
document or partial, are ``uploads_pending``'s state machine.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

import asyncssh
from asyncssh import SFTPAttrs

from qprserver.exchange import mailbox, partials
from qprserver.sftp.handles import UploadHandle
from qprserver.sftp.paths import VPath
from qprserver.sftp.uploads_pending import PendingUploads, when


class Outbox(PendingUploads):
    """What a depositor sees in ``/outbox`` in one session: listings and attributes, on
    top of the upload state machine (``uploads_pending``)."""

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
            await partials.set_mtime(self.ctx.db, self.account.id, found.path, when(attrs.mtime))
        elif isinstance(found, mailbox.Entry):
            async with self.ctx.db.session() as session:
                await mailbox.set_outbox_mtime(session, self.account, found.id, when(attrs.mtime))

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
