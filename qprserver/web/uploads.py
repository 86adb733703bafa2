"""Depositors in the browser: upload through the one acceptance path, see protocols
and who received and downloaded their documents.

The form's body is read as it arrives (python-multipart's streaming parser) and each
file's bytes go straight into a ``BlobWriter`` of this node's spool, as an SFTP
upload's do; nothing is held in memory or copied to a temp file first. The form's
token field comes first and is checked before any file byte is stored: a POST
without it is refused with 403 and leaves nothing behind. A finished file goes to
``UploadService.complete`` — names, content, Qb-R checks, routing, versions,
protocol, mails and audit exactly as over SFTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import func, select
from starlette.responses import Response

from qprserver.accounts.enums import Role
from qprserver.audit.chain import Actor
from qprserver.db.engine import Reads
from qprserver.db.models import UploadProtocol
from qprserver.errors import InvalidInput, Rejected
from qprserver.exchange import listing
from qprserver.ik import IK
from qprserver.storage.base import BlobWriter
from qprserver.web.pages import (
    CSRF_FIELD,
    Call,
    address,
    forbidden,
    int_param,
    page,
    render,
    token_ok,
)

log = logging.getLogger(__name__)

FILES_FIELD = "dateien"
DIRECT_FIELD = "empfaenger"
MAX_FILES = 20
MAX_FIELD = 200


class _Refused(Exception):
    """The form broke a rule before its files were taken (token, too many files)."""


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    writer: BlobWriter | None = None


class _Form:
    """The callbacks of the streaming parser: fields kept small, files stored."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.limit = call.portal.settings.storage.max_upload_bytes
        self.fields: dict[str, str] = {}
        self.files: list[tuple[str, BlobWriter]] = []
        self.part = _Part()
        self.header_name = b""
        self.header_text = b""
        self.disposition = b""

    def part_begin(self) -> None:
        self.part = _Part()
        self.disposition = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_text += data[start:end]

    def header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_text
        self.header_name = self.header_text = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is None:
            return
        # Browsers send the base name; a few old ones the whole client path.
        name = filename.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
        self.part.filename = name
        if self.part.name != FILES_FIELD or not name:
            return
        if not token_ok(self.call.visit.session.csrf, self.fields.get(CSRF_FIELD)):
            raise _Refused("token")
        if len(self.files) >= MAX_FILES:
            raise _Refused("files")
        self.part.writer = self.call.portal.blobs.begin_write()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        writer = self.part.writer
        if writer is not None:
            # Past the limit nothing more is kept; the size says "too large" to the check.
            room = self.limit + 1 - writer.size
            if room > 0:
                writer.write(writer.size, data[start : min(end, start + room)])
        elif self.part.filename is None and len(self.part.value) < MAX_FIELD:
            self.part.value += data[start:end]

    def part_end(self) -> None:
        if self.part.writer is not None and self.part.filename:
            self.files.append((self.part.filename, self.part.writer))
        elif self.part.filename is None:
            self.fields[self.part.name] = self.part.value[:MAX_FIELD].decode("utf-8", "replace")

    def abort(self) -> None:
        for _, writer in self.files:
            writer.abort()
        if self.part.writer is not None:
            self.part.writer.abort()


async def upload_form(call: Call) -> Response:
    return render(call.request, "hochladen.html", {"max_files": MAX_FILES}, visit=call.visit)


async def _parse(call: Call) -> _Form | None:
    """The form with its files stored; None when it is no multipart form."""
    _, params = parse_options_header(call.request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        return None
    form = _Form(call)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": form.part_begin,
            "on_part_data": form.part_data,
            "on_part_end": form.part_end,
            "on_header_field": form.header_field,
            "on_header_value": form.header_value,
            "on_header_end": form.header_end,
            "on_headers_finished": form.headers_finished,
        },
    )
    try:
        async for chunk in call.request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException:
        form.abort()
        raise
    return form


async def upload(call: Call) -> Response:
    """Store the files, run each through the acceptance path, show their protocols."""
    try:
        form = await _parse(call)
    except _Refused as exc:
        if str(exc) == "token":
            log.warning("upload without a valid CSRF token refused")
            return forbidden(call.request)
        return render(
            call.request,
            "hochladen.html",
            {"max_files": MAX_FILES, "message": f"Höchstens {MAX_FILES} Dateien auf einmal."},
            visit=call.visit,
            status=400,
        )
    except FormParserError:
        form = None
    if form is None or not token_ok(call.visit.session.csrf, form.fields.get(CSRF_FIELD)):
        if form is not None:
            form.abort()
        return forbidden(call.request)
    direct = form.fields.get(DIRECT_FIELD, "").strip() or None
    if direct is not None:
        try:
            direct = IK.parse(direct).value
        except InvalidInput as exc:
            form.abort()
            return render(
                call.request,
                "hochladen.html",
                {"max_files": MAX_FILES, "message": str(exc)},
                visit=call.visit,
                status=400,
            )
    if not form.files:
        return render(
            call.request,
            "hochladen.html",
            {"max_files": MAX_FILES, "message": "Bitte mindestens eine Datei auswählen."},
            visit=call.visit,
            status=400,
        )
    account = call.visit.account
    actor = Actor(account.login, address(call.request))

    async def last_id(reads: Reads) -> int:
        found = await reads.scalar(
            select(func.max(UploadProtocol.id)).where(UploadProtocol.depositor_id == account.id)
        )
        return int(found or 0)

    before = await call.portal.db.quick_read(last_id)
    for name, writer in form.files:
        with contextlib.suppress(Rejected):  # a refusal's protocol says why
            await call.portal.uploads.complete(
                account, actor, call.portal.clock.now(), name=name, direct_ik=direct, writer=writer
            )
    shown = {f"{direct}/{name}" if direct else name for name, _ in form.files}

    async def made(reads: Reads) -> list[UploadProtocol]:
        rows = await reads.scalars(
            select(UploadProtocol)
            .where(UploadProtocol.depositor_id == account.id, UploadProtocol.id > before)
            .order_by(UploadProtocol.id)
        )
        return [p for p in rows.all() if p.upload_name in shown]

    protocols = await call.portal.db.quick_read(made)
    return render(
        call.request,
        "protokoll.html",
        {"protocols": [_shown(p) for p in protocols], "title": "Ergebnis des Hochladens"},
        visit=call.visit,
    )


def _shown(protocol: UploadProtocol) -> dict[str, object]:
    """A protocol for the page: its stored JSON, read back."""
    body = json.loads(protocol.body)
    report = body.get("pruefung") or {}
    return {
        "id": protocol.id,
        "name": protocol.upload_name,
        "file_name": protocol.file_name,
        "outcome": protocol.outcome,
        "at": protocol.created_at,
        "body": body,
        "reasons": body.get("gruende", []),
        "findings": report.get("befunde", []),
        "report": report,
    }


async def protocols(call: Call) -> Response:
    before = int_param(call.request.query_params.get("vor"))
    size = call.portal.settings.web.page_size

    async def work(reads: Reads) -> list[UploadProtocol]:
        return await listing.protocols(reads, call.visit.account, before=before, limit=size)

    rows = await call.portal.db.quick_read(work)
    next_url = f"/protokolle?vor={rows[-1].id}" if len(rows) == size else None
    return render(
        call.request,
        "protokolle.html",
        {"protocols": [_shown(p) for p in rows], "next_url": next_url},
        visit=call.visit,
    )


async def protocol(call: Call) -> Response:
    protocol_id = int_param(call.request.path_params.get("id"))

    async def work(reads: Reads) -> UploadProtocol:
        return await listing.protocol(reads, call.visit.account, protocol_id or 0)

    row = await call.portal.db.quick_read(work)
    return render(
        call.request,
        "protokoll.html",
        {"protocols": [_shown(row)], "title": f"Protokoll {row.upload_name}"},
        visit=call.visit,
    )


async def deposited(call: Call) -> Response:
    before = int_param(call.request.query_params.get("vor"))
    size = call.portal.settings.web.page_size

    async def work(reads: Reads) -> list[listing.Deposited]:
        return await listing.deposited(reads, call.visit.account, before=before, limit=size)

    rows = await call.portal.db.quick_read(work)
    next_url = f"/lieferungen?vor={rows[-1].document.id}" if len(rows) == size else None
    return render(
        call.request,
        "lieferungen.html",
        {"rows": rows, "next_url": next_url},
        visit=call.visit,
    )


DEPOSITOR = Role.DEPOSITOR
ROUTES = [
    ("/hochladen", page(upload_form, role=DEPOSITOR), ["GET"]),
    ("/hochladen", page(upload, role=DEPOSITOR, streamed=True), ["POST"]),
    ("/protokolle", page(protocols, role=DEPOSITOR), ["GET"]),
    ("/protokolle/{id}", page(protocol, role=DEPOSITOR), ["GET"]),
    ("/lieferungen", page(deposited, role=DEPOSITOR), ["GET"]),
]
