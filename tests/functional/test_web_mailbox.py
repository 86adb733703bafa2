"""The recipient's pages: Posteingang, downloads (one, ranges, ZIP), acknowledging,
Archiv and Bündel; receipts as over SFTP; other accounts' ids answered 404."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import timedelta

import httpx
from sqlalchemy import select

from qprserver.accounts import service as accounts
from qprserver.db.models import AuditEvent, DownloadReceipt
from qprserver.exchange import bundles
from tests.functional.harness import ADMIN, FACILITY_NW, LV_BY, LV_NW, MD_NW, pdf_bytes
from tests.functional.web import Web, csrf_of, deposit, document_ids


async def _ids(client: httpx.AsyncClient, path: str = "/posteingang") -> dict[str, int]:
    return document_ids((await client.get(path)).text)


async def _receipts(web: Web) -> list[DownloadReceipt]:
    async with web.server.db.read_session() as session:
        return list((await session.scalars(select(DownloadReceipt))).all())


async def test_an_sftp_deposited_document_downloads_whole_with_its_name_and_a_web_receipt(
    web: Web,
) -> None:
    data = pdf_bytes(300_000, b"one")
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_Prüfbericht 2026.pdf", data)
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        ids = await _ids(client)
        name = f"{FACILITY_NW}_Prüfbericht 2026.pdf"
        got = await client.get(f"/dokumente/{ids[name]}")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-length"] == str(len(data))
    disposition = got.headers["content-disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''510512349_Pr%C3%BCfbericht%202026.pdf" in disposition
    [receipt] = await _receipts(web)
    assert receipt.channel == "web" and receipt.delivery_id == ids[name]
    async with web.server.db.read_session() as session:
        event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "download"))
    assert event is not None and json.loads(event.details)["channel"] == "web"


async def test_range_requests_serve_parts_and_the_parts_together_make_one_receipt(
    web: Web,
) -> None:
    data = pdf_bytes(100_000, b"range")
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_teile.pdf", data)
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        ident = (await _ids(client))[f"{FACILITY_NW}_teile.pdf"]
        first = await client.get(f"/dokumente/{ident}", headers={"Range": "bytes=0-59999"})
        assert first.status_code == 206 and first.content == data[:60_000]
        assert first.headers["content-range"] == f"bytes 0-59999/{len(data)}"
        assert await _receipts(web) == []
        rest = await client.get(f"/dokumente/{ident}", headers={"Range": "bytes=60000-"})
        assert rest.status_code == 206 and first.content + rest.content == data
        beyond = await client.get(f"/dokumente/{ident}", headers={"Range": "bytes=200000-"})
        assert beyond.status_code == 416
        head = await client.head(f"/dokumente/{ident}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert head.content == b""
    assert len(await _receipts(web)) == 1


async def test_three_selected_documents_download_as_one_streamed_zip(web: Web) -> None:
    files = {f"{FACILITY_NW}_{i}.pdf": pdf_bytes(50_000 + i, bytes([i])) for i in range(3)}
    for name, data in files.items():
        await deposit(web.server, MD_NW, name, data)
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        ids = await _ids(client)
        token = csrf_of((await client.get("/posteingang")).text)
        got = await client.post(
            "/posteingang",
            data={"csrf": token, "aktion": "zip", "id": [str(ids[n]) for n in files]},
        )
    assert got.status_code == 200
    assert got.headers["content-disposition"].startswith("attachment; ")
    with zipfile.ZipFile(io.BytesIO(got.content)) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == files
    assert len(await _receipts(web)) == 3


async def test_acknowledged_documents_move_from_posteingang_to_archiv(web: Web) -> None:
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_a.pdf", pdf_bytes(1000, b"a"))
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_b.pdf", pdf_bytes(1000, b"b"))
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        ids = await _ids(client)
        token = csrf_of((await client.get("/posteingang")).text)
        done = await client.post(
            "/posteingang",
            data={"csrf": token, "aktion": "abrufen", "id": str(ids[f"{FACILITY_NW}_a.pdf"])},
        )
        assert done.status_code == 303
        assert set(await _ids(client)) == {f"{FACILITY_NW}_b.pdf"}
        assert set(await _ids(client, "/archiv")) == {f"{FACILITY_NW}_a.pdf"}
        archived = await client.get(f"/dokumente/{ids[f'{FACILITY_NW}_a.pdf']}")
        assert archived.status_code == 200


async def test_another_accounts_document_id_is_not_found(web: Web) -> None:
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_x.pdf", pdf_bytes(1000, b"x"))
    mine = await web.enrol(LV_NW)
    theirs = await web.enrol(LV_BY)
    async with web.client() as client:
        await web.login(client, LV_NW, mine)
        ident = (await _ids(client))[f"{FACILITY_NW}_x.pdf"]
    async with web.client() as other:
        await web.login(other, LV_BY, theirs)
        assert (await other.get(f"/dokumente/{ident}")).status_code == 404
        assert (await other.get("/dokumente/999999")).status_code == 404
        assert (await other.get("/dokumente/..%2F..%2Fetc%2Fpasswd")).status_code == 404
        token = csrf_of((await other.get("/posteingang")).text)
        ack = await other.post(
            "/posteingang", data={"csrf": token, "aktion": "abrufen", "id": str(ident)}
        )
        assert ack.status_code == 404
    async with web.client() as client:
        await web.login(client, LV_NW, mine)
        assert ident in (await _ids(client)).values()


async def test_posteingang_sorts_by_name_and_filters_by_ik_and_name(web: Web) -> None:
    for name in ("c", "a", "b"):
        await deposit(web.server, MD_NW, f"{FACILITY_NW}_{name}.pdf", pdf_bytes(500, name.encode()))
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        by_date = list(await _ids(client))
        by_name = list(await _ids(client, "/posteingang?sortierung=name&richtung=auf"))
        by_ik = await _ids(client, f"/posteingang?suche={MD_NW}")
        by_part = await _ids(client, "/posteingang?suche=_B")
    assert by_date == [f"{FACILITY_NW}_{n}.pdf" for n in ("b", "a", "c")]
    assert by_name == [f"{FACILITY_NW}_{n}.pdf" for n in ("a", "b", "c")]
    assert len(by_ik) == 3 and list(by_part) == [f"{FACILITY_NW}_b.pdf"]


async def test_pages_follow_each_other_by_key_without_gaps_or_repeats(web: Web) -> None:
    settings = web.portal.settings
    web.portal.settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"page_size": 5})}
    )
    for i in range(12):
        await deposit(web.server, MD_NW, f"{FACILITY_NW}_{i:02d}.pdf", pdf_bytes(300, bytes([i])))
    secret = await web.enrol(LV_NW)
    seen: list[str] = []
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        url: str | None = "/posteingang?sortierung=name&richtung=auf"
        while url:
            page = (await client.get(url)).text
            seen += list(await _ids(client, url))
            url = None
            if "Nächste Seite" in page:
                url = page.split("Nächste Seite")[0].rsplit('<a href="', 1)[1].split('"')[0]
                url = url.replace("&amp;", "&")
    assert seen == [f"{FACILITY_NW}_{i:02d}.pdf" for i in range(12)]


async def test_a_weekly_bundle_and_its_checksum_download_and_acknowledge(web: Web) -> None:
    await deposit(web.server, MD_NW, f"{FACILITY_NW}_w.pdf", pdf_bytes(2000, b"w"))
    async with web.server.db.session() as session:
        await accounts.update_account(session, ADMIN, web.clock.now(), LV_NW, bundles=True)
    await bundles.build_weekly(
        web.server.db,
        web.portal.blobs,
        web.server.notifier,
        web.server.settings,
        web.clock.now() + timedelta(days=7),
    )
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        page = (await client.get("/buendel")).text
        ident = page.split('href="/buendel/')[1].split("/")[0]
        archive = await client.get(f"/buendel/{ident}/datei")
        checksum = await client.get(f"/buendel/{ident}/sha256")
        assert checksum.text.split()[0] == hashlib.sha256(archive.content).hexdigest()
        with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
            assert f"{FACILITY_NW}_w.pdf" in " ".join(z.namelist())
        done = await client.post(f"/buendel/{ident}/abrufen", data={"csrf": csrf_of(page)})
        assert done.status_code == 303
        assert (await client.get(f"/buendel/{ident}/datei")).status_code == 404


async def test_posteingang_sorts_by_kind_and_pages_by_key_within_a_kind(web: Web) -> None:
    settings = web.portal.settings
    web.portal.settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"page_size": 5})}
    )
    for i in range(3):
        await deposit(web.server, MD_NW, f"{FACILITY_NW}_{i}.pdf", pdf_bytes(300, bytes([i])))
    for i in range(4):
        await deposit(web.server, MD_NW, f"{LV_NW}/anlage_{i}.pdf", pdf_bytes(300, bytes([9, i])))
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        first = (await client.get("/posteingang?sortierung=art&richtung=auf")).text
        following = first.split("Nächste Seite")[0].rsplit('<a href="', 1)[1].split('"')[0]
        second = (await client.get(following.replace("&amp;", "&"))).text
    names = list(document_ids(first)) + list(document_ids(second))
    # "direkt" (addressed to one recipient) before "pruefbericht"; by delivery within a kind.
    assert names == [f"anlage_{i}.pdf" for i in range(4)] + [
        f"{FACILITY_NW}_{i}.pdf" for i in range(3)
    ]
