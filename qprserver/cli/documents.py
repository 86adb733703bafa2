"""``document``: what a depositor delivered, to whom, and who collected it."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy import select

from qprserver.accounts import service as accounts
from qprserver.cli.app import App, pass_app
from qprserver.cli.output import Column, emit, json_option, print_table
from qprserver.db.engine import Database
from qprserver.db.models import Document
from qprserver.errors import NotFound
from qprserver.exchange import mailbox


@click.group("document")
def document_group() -> None:
    """Delivered documents and their download receipts."""


def _doc_dict(doc: Document) -> dict[str, object]:
    return {
        "id": doc.id,
        "name": doc.name,
        "kind": doc.kind,
        "subject_ik": doc.subject_ik,
        "version": doc.version,
        "current": doc.current,
        "sha256": doc.sha256,
        "size": doc.size,
        "uploaded_at": doc.uploaded_at.isoformat(),
    }


DOCUMENT_COLUMNS = (
    Column("ID", "id"),
    Column("Name", "name"),
    Column("Art", "kind"),
    Column("IK", "subject_ik"),
    Column("Version", "version"),
    Column("Aktuell", "current"),
    Column("Größe", "size"),
    Column("Hochgeladen", "uploaded_at"),
)

DELIVERY_COLUMNS = (
    Column("Empfänger", "recipient"),
    Column("Ordner", "folder"),
    Column("Bereitgestellt", "delivered_at"),
    Column("Abrufe", value=lambda d: len(d["downloads"])),
    Column("Letzter Abruf", value=lambda d: d["downloads"][-1]["at"] if d["downloads"] else "-"),
)


@document_group.command("list")
@click.option("--depositor", required=True, help="IK of the depositor.")
@json_option
@pass_app
def document_list(app: App, depositor: str, as_json: bool) -> None:
    """Documents a depositor delivered, newest first."""

    async def work(db: Database) -> list[dict[str, object]]:
        async with db.read_session() as session:
            account = await accounts.get_account(session, depositor)
            docs = await session.scalars(
                select(Document)
                .where(Document.depositor_id == account.id)
                .order_by(Document.id.desc())
            )
            return [_doc_dict(d) for d in docs]

    emit(app.run(work), as_json=as_json, columns=DOCUMENT_COLUMNS)


@document_group.command("show")
@click.argument("document_id", type=int)
@json_option
@pass_app
def document_show(app: App, document_id: int, as_json: bool) -> None:
    """One document: its recipients, where it is, and every download receipt."""

    async def work(db: Database) -> dict[str, object]:
        async with db.read_session() as session:
            doc = await session.get(Document, document_id)
            if doc is None:
                raise NotFound(f"kein Dokument {document_id}")
            data = _doc_dict(doc)
            data["deliveries"] = await mailbox.deliveries_of_document(session, doc.id)
            return data

    emit(app.run(work), as_json=as_json, text=_print_document)


def _print_document(data: dict[str, Any]) -> None:
    click.echo(f"{data['id']}: {data['name']} v{data['version']} {data['sha256']}")
    print_table(DELIVERY_COLUMNS, data["deliveries"])
