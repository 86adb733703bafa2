"""``qprserver document list | show`` through the real CLI, after a real upload and download."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from tests.functional.conftest import Instance, write_config
from tests.functional.harness import (
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Server,
    download_receipts,
    pdf_bytes,
)

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"
DOCUMENT_KEYS = {
    "id",
    "name",
    "kind",
    "subject_ik",
    "version",
    "current",
    "sha256",
    "size",
    "uploaded_at",
}
DELIVERY_KEYS = {"recipient", "folder", "name", "delivered_at", "acknowledged_at", "downloads"}


def _cli(server: Server, tmp_path: Path) -> Instance:
    """The CLI on the server's database."""
    return Instance(tmp_path, write_config(tmp_path, server.db.settings))


async def test_a_delivered_and_collected_document_shows_its_recipients_and_receipts(
    server: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(50_000)
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(data)
    async with (
        server.connect(LV_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        assert await f.read() == data
    assert await download_receipts(server, LV_NW) == 1
    cli = _cli(server, tmp_path)

    docs = await asyncio.to_thread(cli.json, "document", "list", "--depositor", MD_NW)
    assert len(docs) == 1 and set(docs[0]) >= DOCUMENT_KEYS
    doc = docs[0]
    digest = hashlib.sha256(data).hexdigest()
    assert (doc["name"], doc["kind"], doc["subject_ik"]) == (REPORT, "pruefbericht", FACILITY_NW)
    assert (doc["version"], doc["current"], doc["size"], doc["sha256"]) == (
        1,
        True,
        len(data),
        digest,
    )

    shown = await asyncio.to_thread(cli.json, "document", "show", str(doc["id"]))
    assert set(shown) >= DOCUMENT_KEYS | {"deliveries"}
    assert {k: shown[k] for k in DOCUMENT_KEYS} == {k: doc[k] for k in DOCUMENT_KEYS}
    deliveries = {d["recipient"]: d for d in shown["deliveries"]}
    assert sorted(deliveries) == [LV_NW, FACILITY_NW]
    assert all(set(d) >= DELIVERY_KEYS for d in deliveries.values())
    assert deliveries[FACILITY_NW]["downloads"] == []
    (receipt,) = deliveries[LV_NW]["downloads"]
    assert set(receipt) >= {"at", "sha256", "remote"} and receipt["sha256"] == digest
    assert deliveries[LV_NW]["folder"] == "inbox" and deliveries[LV_NW]["name"] == REPORT

    text = await asyncio.to_thread(cli.ok, "document", "show", str(doc["id"]))
    assert text.startswith(f"{doc['id']}: {REPORT} v1 {digest}\n")
    assert LV_NW in text and "Letzter Abruf" in text
    table = await asyncio.to_thread(cli.ok, "document", "list", "--depositor", MD_NW)
    assert REPORT in table


async def test_documents_of_an_unknown_depositor_or_id_are_refused_with_one_line(
    server: Server, tmp_path: Path
) -> None:
    cli = _cli(server, tmp_path)
    line = await asyncio.to_thread(cli.fails, "document", "list", "--depositor", "185830016")
    assert line == "Error: kein Konto mit IK 185830016"
    line = await asyncio.to_thread(cli.fails, "document", "list", "--depositor", "185830017")
    assert line.startswith("Error: IK 185830017 ungültig: Prüfziffer")
    assert await asyncio.to_thread(cli.fails, "document", "show", "4711") == (
        "Error: kein Dokument 4711"
    )
