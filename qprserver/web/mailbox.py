"""Posteingang, Archiv and Bündel: the recipient's pages and downloads.

Lists come from ``exchange.listing`` (sorted, filtered, paged by key);
acknowledging is ``exchange.mailbox.acknowledge``, as a delete over SFTP is. Ids in
URLs and forms are the account's own or answered 404, like ids that do not exist.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlencode

from starlette.responses import Response

from qprserver.accounts.enums import Channel, Role
from qprserver.audit.chain import Actor
from qprserver.db.engine import Reads
from qprserver.db.models import Bundle
from qprserver.errors import NotFound
from qprserver.exchange import listing, mailbox, receipts
from qprserver.exchange.folders import Folder
from qprserver.exchange.listing import Sort
from qprserver.storage.base import BlobNotFound, BlobReader
from qprserver.web.downloads import Member, file_response, zip_response
from qprserver.web.pages import Call, address, int_param, page, render, see_other

log = logging.getLogger(__name__)

TITLES = {Folder.INBOX: "Posteingang", Folder.ARCHIVE: "Archiv"}
URLS = {Folder.INBOX: "/posteingang", Folder.ARCHIVE: "/archiv"}
MAX_ZIP_MEMBERS = 500
# What a page says after an action (the URL names the message, never holds its text).
NOTES = {
    "auswahl": "Bitte mindestens ein Dokument auswählen.",
    "abgerufen": "Die ausgewählten Dokumente sind als abgerufen markiert und im Archiv.",
    "buendel": "Das Bündel ist als abgerufen markiert.",
}


def _sort(value: str) -> Sort:
    try:
        return Sort(value)
    except ValueError:
        return Sort.DATE


async def _folder_page(call: Call, folder: Folder) -> Response:
    params = call.request.query_params
    sort = _sort(params.get("sortierung", Sort.DATE.value))
    descending = params.get("richtung", "ab") != "auf"
    query = params.get("suche", "")[:100]
    after = params.get("nach", "")[:400]
    size = call.portal.settings.web.page_size

    async def work(reads: Reads) -> listing.Page:
        return await listing.deliveries(
            reads,
            call.visit.account,
            folder,
            sort=sort,
            descending=descending,
            query=query,
            after=after,
            limit=size,
        )

    result = await call.portal.db.quick_read(work)
    base = {"sortierung": sort.value, "richtung": "ab" if descending else "auf", "suche": query}
    next_url = (
        f"{URLS[folder]}?{urlencode({**base, 'nach': result.next_key})}"
        if result.next_key
        else None
    )

    def sort_url(by: Sort) -> str:
        flip = by is sort and descending
        return f"{URLS[folder]}?" + urlencode(
            {"sortierung": by.value, "richtung": "auf" if flip else "ab", "suche": query}
        )

    return render(
        call.request,
        "ordner.html",
        {
            "title": TITLES[folder],
            "folder": folder.value,
            "url": URLS[folder],
            "rows": result.rows,
            "next_url": next_url,
            "first_url": f"{URLS[folder]}?{urlencode(base)}" if after else None,
            "sort": sort.value,
            "descending": descending,
            "query": query,
            "sort_urls": {s.value: sort_url(s) for s in Sort},
            "message": NOTES.get(params.get("hinweis", ""), ""),
        },
        visit=call.visit,
    )


async def inbox(call: Call) -> Response:
    return await _folder_page(call, Folder.INBOX)


async def archive(call: Call) -> Response:
    return await _folder_page(call, Folder.ARCHIVE)


def _receipt(call: Call, row: listing.Row) -> receipts.Download:
    account = call.visit.account
    return receipts.Download(
        account.id,
        account.login,
        row.id,
        row.sha256,
        row.name,
        call.portal.clock.now(),
        address(call.request),
        Channel.WEB,
        size=row.size,
    )


async def _open(call: Call, sha256: str) -> BlobReader:
    try:
        return await asyncio.to_thread(call.portal.blobs.open_reader, sha256)
    except (BlobNotFound, OSError):
        log.error("stored file %s is missing", sha256)
        raise NotFound("Datei") from None


async def download(call: Call) -> Response:
    """One delivery of the inbox or archive."""
    delivery_id = int_param(call.request.path_params.get("id"))
    if delivery_id is None:
        raise NotFound("Lieferung")

    async def work(reads: Reads) -> listing.Row:
        return await listing.delivery(reads, call.visit.account, delivery_id)

    row = await call.portal.db.quick_read(work)
    reader = await _open(call, row.sha256)
    return file_response(
        call.request,
        call.portal.db,
        reader,
        name=row.name,
        size=row.size,
        receipt=_receipt(call, row),
    )


async def _selected(call: Call) -> list[listing.Row]:
    assert call.form is not None
    ids = [int_param(v) for v in call.form.getlist("id")][:MAX_ZIP_MEMBERS]
    if any(i is None for i in ids):
        raise NotFound("Lieferung")

    async def work(reads: Reads) -> list[listing.Row]:
        return [await listing.delivery(reads, call.visit.account, i) for i in ids if i]

    return await call.portal.db.quick_read(work)


async def _act(call: Call, folder: Folder) -> Response:
    """The buttons under a list: the selection as one ZIP, or (inbox) acknowledge it."""
    assert call.form is not None
    rows = await _selected(call)
    if not rows:
        return see_other(f"{URLS[folder]}?hinweis=auswahl")
    action = call.form.get("aktion")
    if action == "zip":
        members: list[Member] = []
        try:
            for row in rows:
                reader = await _open(call, row.sha256)
                members.append((row.name, row.delivered_at, reader, _receipt(call, row)))
        except NotFound:
            for _, _, reader, _ in members:
                reader.close()
            raise
        stamp = call.portal.clock.now().strftime("%Y%m%d-%H%M%S")
        return zip_response(call.portal.db, f"{TITLES[folder]}-{stamp}.zip", members)
    if action == "abrufen" and folder is Folder.INBOX:
        actor = Actor(call.visit.account.login, address(call.request))
        now = call.portal.clock.now()
        async with call.portal.db.session() as session:
            for row in rows:
                if row.acknowledged_at is not None:
                    continue
                await mailbox.acknowledge(session, call.visit.account, actor, now, row.name)
        return see_other(f"{URLS[folder]}?hinweis=abgerufen")
    raise NotFound("Aktion")


async def inbox_action(call: Call) -> Response:
    return await _act(call, Folder.INBOX)


async def archive_action(call: Call) -> Response:
    return await _act(call, Folder.ARCHIVE)


async def bundles(call: Call) -> Response:
    async def work(reads: Reads) -> list[Bundle]:
        return list(await listing.bundles(reads, call.visit.account))

    rows = await call.portal.db.quick_read(work)
    message = NOTES.get(call.request.query_params.get("hinweis", ""), "")
    return render(
        call.request, "buendel.html", {"bundles": rows, "message": message}, visit=call.visit
    )


async def _bundle(call: Call) -> Bundle:
    bundle_id = int_param(call.request.path_params.get("id"))
    if bundle_id is None:
        raise NotFound("Bündel")

    async def work(reads: Reads) -> Bundle:
        return await listing.bundle(reads, call.visit.account, bundle_id)

    return await call.portal.db.quick_read(work)


async def bundle_download(call: Call) -> Response:
    bundle = await _bundle(call)
    reader = await _open(call, bundle.sha256)
    return file_response(
        call.request, call.portal.db, reader, name=bundle.name, size=bundle.size, receipt=None
    )


async def bundle_checksum(call: Call) -> Response:
    bundle = await _bundle(call)
    body = f"{bundle.sha256}  {bundle.name}\n".encode("ascii")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{bundle.name}.sha256"',
            "Cache-Control": "no-store",
        },
    )


async def bundle_acknowledge(call: Call) -> Response:
    bundle = await _bundle(call)
    async with call.portal.db.session() as session:
        await mailbox.acknowledge_bundle(
            session,
            call.visit.account,
            Actor(call.visit.account.login, address(call.request)),
            call.portal.clock.now(),
            bundle.name,
        )
    return see_other("/buendel?hinweis=buendel")


RECIPIENT = Role.RECIPIENT
ROUTES = [
    ("/posteingang", page(inbox, role=RECIPIENT), ["GET"]),
    ("/posteingang", page(inbox_action, role=RECIPIENT), ["POST"]),
    ("/archiv", page(archive, role=RECIPIENT), ["GET"]),
    ("/archiv", page(archive_action, role=RECIPIENT), ["POST"]),
    ("/dokumente/{id}", page(download, role=RECIPIENT), ["GET"]),
    ("/buendel", page(bundles, role=RECIPIENT), ["GET"]),
    ("/buendel/{id}/datei", page(bundle_download, role=RECIPIENT), ["GET"]),
    ("/buendel/{id}/sha256", page(bundle_checksum, role=RECIPIENT), ["GET"]),
    ("/buendel/{id}/abrufen", page(bundle_acknowledge, role=RECIPIENT), ["POST"]),
]
