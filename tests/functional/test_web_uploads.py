"""Depositors in the browser: uploads through the acceptance path SFTP uses, the
protocol page with every finding, and the list of deliveries with their receipts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qprserver.db.engine import Database
from qprserver.ik import check_digit
from tests.conftest import QB_DATA
from tests.functional.harness import (
    HOSPITAL,
    IN_WINDOW,
    LV_SH,
    REPORT,
    Server,
    pdf_bytes,
    start_qb_server,
)
from tests.functional.web import Web, csrf_of, document_ids, make_web

FACILITY_SH = "51011234" + str(check_digit("51011234"))

pytestmark = pytest.mark.skipif(
    not (QB_DATA / REPORT).exists(), reason="G-BA test data (../shared/data/qb) not present"
)


@pytest.fixture
async def qb_web(tmp_path: Path, db: Database) -> AsyncIterator[Web]:
    srv: Server = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    await srv.add_route("pruefbericht", "SH", LV_SH)
    web = make_web(srv)
    web.clock.advance(IN_WINDOW - web.clock.now())
    try:
        yield web
    finally:
        await srv.listener.stop(grace=0)


async def test_a_pdf_and_a_quality_report_uploaded_in_one_form_are_checked_and_delivered(
    qb_web: Web,
) -> None:
    web = qb_web
    secret = await web.enrol(HOSPITAL)
    report = (QB_DATA / REPORT).read_bytes()
    pdf = pdf_bytes(4000, b"hospital")
    async with web.client() as client:
        await web.login(client, HOSPITAL, secret)
        token = await web.token(client, "/hochladen")
        done = await client.post(
            "/hochladen",
            data={"csrf": token},
            files=[
                ("dateien", (f"{FACILITY_SH}_bericht.pdf", pdf, "application/pdf")),
                ("dateien", (REPORT, report, "text/xml")),
                ("dateien", ("kaputt.pdf", b"no pdf at all", "application/pdf")),
            ],
        )
        assert done.status_code == 200, done.text
        page = done.text
        assert f"{FACILITY_SH}_bericht.pdf: angenommen" in page
        assert f"{REPORT}: angenommen" in page
        assert "kaputt.pdf: abgelehnt" in page
        assert "Befunde der Prüfung" in page or "keine Befunde" in page
        listed = (await client.get("/protokolle")).text
        assert listed.count('href="/protokolle/') == 3
    recipient = await web.enrol(LV_SH)
    async with web.client() as client:
        await web.login(client, LV_SH, recipient)
        inbox = (await client.get("/posteingang")).text
        assert REPORT in inbox and f"{FACILITY_SH}_bericht.pdf" in inbox
        ident = document_ids(inbox)[REPORT]
        got = await client.get(f"/dokumente/{ident}")
        assert got.content == report
    async with web.client() as client:
        await web.login(client, HOSPITAL, secret)
        deliveries = (await client.get("/lieferungen")).text
    assert REPORT in deliveries and f"{LV_SH}: " in deliveries


async def test_an_upload_without_the_token_is_refused_and_nothing_is_stored(
    qb_web: Web,
) -> None:
    web = qb_web
    secret = await web.enrol(HOSPITAL)
    async with web.client() as client:
        await web.login(client, HOSPITAL, secret)
        refused = await client.post(
            "/hochladen",
            data={"csrf": "falsch"},
            files=[("dateien", (f"{FACILITY_SH}_x.pdf", pdf_bytes(5000), "application/pdf"))],
        )
        assert refused.status_code == 403
        listed = (await client.get("/protokolle")).text
    assert 'href="/protokolle/' not in listed
    assert web.server.temp_files() == []


async def test_another_depositors_protocol_id_is_not_found(qb_web: Web) -> None:
    web = qb_web
    secret = await web.enrol(HOSPITAL)
    async with web.client() as client:
        await web.login(client, HOSPITAL, secret)
        token = csrf_of((await client.get("/hochladen")).text)
        await client.post(
            "/hochladen",
            data={"csrf": token},
            files=[("dateien", ("kaputt.pdf", b"x", "application/pdf"))],
        )
        listed = (await client.get("/protokolle")).text
        ident = listed.split('href="/protokolle/')[1].split('"')[0]
        assert (await client.get(f"/protokolle/{ident}")).status_code == 200
    await web.server.add_account("190100012", ["depositor"])
    other = await web.enrol("190100012")
    async with web.client() as client:
        await web.login(client, "190100012", other)
        assert (await client.get(f"/protokolle/{ident}")).status_code == 404
