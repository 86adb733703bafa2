"""A hospital delivers its quality report over SFTP; the acceptance checks decide."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from lxml import etree
from sqlalchemy import delete, select

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock
from qprserver.db.engine import Database
from qprserver.db.models import Bundle, MailMessage, QbRegistration
from qprserver.jobs.registry import run_job
from qprserver.service import job_context
from tests.conftest import QB_DATA
from tests.functional.harness import (
    ADMIN,
    HOSPITAL,
    IN_WINDOW,
    LV_SH,
    REPORT,
    Server,
    start_qb_server,
)

pytestmark = pytest.mark.skipif(
    not (QB_DATA / REPORT).exists(), reason="G-BA test data (../shared/data/qb) not present"
)


@pytest.fixture
async def qb_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    srv = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


@pytest.fixture(params=["missing", "not a schema"])
async def schema_trouble_server(
    request: pytest.FixtureRequest, tmp_path: Path, db: Database
) -> AsyncIterator[Server]:
    """A server whose configured 2019 schema file is missing, or is no XML schema."""
    schema = tmp_path / "schemas" / "qb-2019-schema.xsd"
    if request.param == "not a schema":
        schema.parent.mkdir()
        schema.write_text("<xs:schema kaputt", encoding="utf-8")
    srv = await start_qb_server(tmp_path, db, schema)
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


async def _put(server: Server, data: bytes) -> None:
    async with (
        server.connect(HOSPITAL) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write(data)


async def _ls(server: Server, ik: str, folder: str) -> list[str]:
    async with server.connect(ik) as conn, conn.start_sftp_client() as sftp:
        return sorted(n for n in await sftp.listdir(folder) if n not in (".", ".."))


async def _read(server: Server, ik: str, path: str) -> bytes:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "rb") as f,
    ):
        return bytes(await f.read())


def _without_first(data: bytes, tag: str) -> bytes:
    """The report with the first element called tag removed."""
    root = etree.fromstring(data)
    element = root.find(f".//{tag}")
    assert element is not None, tag
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))


async def test_the_real_report_is_accepted_and_reaches_the_recipient_circle(
    qb_server: Server,
) -> None:
    data = (QB_DATA / REPORT).read_bytes()
    await _put(qb_server, data)
    assert await _ls(qb_server, LV_SH, "/inbox") == [REPORT]
    assert await _read(qb_server, LV_SH, f"/inbox/{REPORT}") == data
    (name,) = await _ls(qb_server, HOSPITAL, "/receipts")
    protocol = json.loads(await _read(qb_server, HOSPITAL, f"/receipts/{name}"))
    assert protocol["ergebnis"] == "angenommen"
    assert protocol["pruefung"]["ergebnis"] == "angenommen"
    assert all(f["klasse"] != "hart" for f in protocol["pruefung"]["befunde"])
    async with qb_server.db.read_session() as session:
        result_mail = await session.scalar(
            select(MailMessage).where(MailMessage.template == "upload_result")
        )
    assert result_mail is not None and "angenommen" in result_mail.subject


async def test_a_report_missing_a_required_element_is_rejected_with_its_protocol(
    qb_server: Server,
) -> None:
    broken = _without_first((QB_DATA / REPORT).read_bytes(), "Krankenhauskontaktdaten")
    with pytest.raises(asyncssh.SFTPFailure, match="abgelehnt"):
        await _put(qb_server, broken)
    assert await _ls(qb_server, LV_SH, "/inbox") == []
    (name,) = await _ls(qb_server, HOSPITAL, "/receipts")
    protocol = json.loads(await _read(qb_server, HOSPITAL, f"/receipts/{name}"))
    assert protocol["ergebnis"] == "abgelehnt"
    assert any(f["klasse"] == "hart" for f in protocol["pruefung"]["befunde"])
    async with qb_server.db.read_session() as session:
        mail = await session.scalar(
            select(MailMessage).where(MailMessage.template == "upload_result")
        )
    assert mail is not None and "abgelehnt" in mail.subject


async def test_a_corrected_upload_supersedes_the_earlier_version(qb_server: Server) -> None:
    first = (QB_DATA / REPORT).read_bytes()
    await _put(qb_server, first)
    second = first + b"\n<!-- korrigierte Fassung -->\n"  # a comment after the root is legal
    await _put(qb_server, second)
    assert await _ls(qb_server, LV_SH, "/inbox") == [REPORT]
    assert await _read(qb_server, LV_SH, f"/inbox/{REPORT}") == second


async def test_an_upload_outside_every_window_is_refused_naming_the_windows(
    qb_server: Server,
) -> None:
    qb_server.listener.ctx.clock = FixedClock(datetime(2021, 3, 1, tzinfo=UTC))
    with pytest.raises(asyncssh.SFTPFailure, match="FRIST-01"):
        await _put(qb_server, (QB_DATA / REPORT).read_bytes())
    assert await _ls(qb_server, LV_SH, "/inbox") == []
    (name,) = await _ls(qb_server, HOSPITAL, "/receipts")
    protocol = json.loads(await _read(qb_server, HOSPITAL, f"/receipts/{name}"))
    (window,) = [f for f in protocol["pruefung"]["befunde"] if f["regel"] == "FRIST-01"]
    assert "15.10.2020" in window["meldung"] and "23.11.2020" in window["meldung"]


async def _refusal(server: Server, data: bytes) -> tuple[str, dict[str, object]]:
    """The SFTP error text of a refused upload and its protocol from /receipts."""
    with pytest.raises(asyncssh.SFTPFailure) as refused:
        await _put(server, data)
    assert await _ls(server, LV_SH, "/inbox") == []
    (name,) = await _ls(server, HOSPITAL, "/receipts")
    return str(refused.value.reason), json.loads(await _read(server, HOSPITAL, f"/receipts/{name}"))


async def test_a_report_over_the_configured_xml_size_is_refused_naming_the_limit(
    tmp_path: Path, db: Database
) -> None:
    data = (QB_DATA / REPORT).read_bytes()
    limit = len(data) - 1
    server = await start_qb_server(
        tmp_path, db, QB_DATA / "qb-2019-schema.xsd", max_xml_bytes=limit
    )
    try:
        reason, protocol = await _refusal(server, data)
    finally:
        await server.listener.stop(grace=0)
    assert f"XML-Datei größer als die erlaubten {limit} Bytes" in reason
    assert protocol["ergebnis"] == "abgelehnt"
    assert protocol["gruende"] == [f"XML-Datei größer als die erlaubten {limit} Bytes"]


async def test_a_billion_laughs_report_is_refused_without_expansion(qb_server: Server) -> None:
    bomb = b'<?xml version="1.0"?>\n<!DOCTYPE Qualitaetsbericht [\n<!ENTITY lol "lol">\n'
    for i in range(1, 10):
        prev = b"&lol;" if i == 1 else b"&lol%d;" % (i - 1)
        bomb += b'<!ENTITY lol%d "%s">\n' % (i, prev * 10)
    bomb += b"]>\n<Qualitaetsbericht>&lol9;</Qualitaetsbericht>\n"
    reason, protocol = await _refusal(qb_server, bomb)
    assert "DTD" in reason
    assert protocol["ergebnis"] == "abgelehnt"
    assert "lollol" not in json.dumps(protocol)


async def test_a_report_that_cannot_be_checked_gets_a_protocol_and_mail_and_may_be_sent_again(
    schema_trouble_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server = schema_trouble_server
    data = (QB_DATA / REPORT).read_bytes()
    with pytest.raises(asyncssh.SFTPFailure, match="Prüfung derzeit nicht möglich"):
        await _put(server, data)
    assert await _ls(server, LV_SH, "/inbox") == []
    (name,) = await _ls(server, HOSPITAL, "/receipts")
    protocol = json.loads(await _read(server, HOSPITAL, f"/receipts/{name}"))
    assert protocol["ergebnis"] == "Prüfung derzeit nicht möglich"
    assert protocol["pruefung"]["ergebnis"] == "Prüfung derzeit nicht möglich"
    assert "erneut" in protocol["pruefung"]["hinweis"]
    assert "schemas" not in json.dumps(protocol)  # no server path reaches the hospital
    async with server.db.read_session() as session:
        mail = await session.scalar(
            select(MailMessage).where(MailMessage.template == "upload_result")
        )
    assert mail is not None and "Prüfung derzeit nicht möglich" in mail.subject
    assert "nicht angenommen" in mail.body_text and "unverändert erneut" in mail.body_text
    assert name in mail.body_text
    # The operator gets one warning naming the setting, and no traceback.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "qb.schemas.2019" in warnings[0].getMessage() and warnings[0].exc_info is None
    # Once the operator puts the schema in place, the same file is accepted.
    schema = server.settings.qb.schemas["2019"]
    schema.parent.mkdir(exist_ok=True)
    shutil.copy(QB_DATA / "qb-2019-schema.xsd", schema)
    await _put(server, data)
    assert await _ls(server, LV_SH, "/inbox") == [REPORT]


async def test_the_final_bundle_follows_the_replacement_window_with_the_latest_versions_once(
    qb_server: Server,
) -> None:
    first = (QB_DATA / REPORT).read_bytes()
    await _put(qb_server, first)
    latest = first + b"\n<!-- korrigierte Fassung -->\n"
    await _put(qb_server, latest)
    async with qb_server.db.session() as session:
        await accounts.update_account(session, ADMIN, IN_WINDOW, LV_SH, bundles=True)
    ctx = job_context(
        qb_server.settings, qb_server.db, qb_server.notifier, qb_server.listener.ctx.blobs
    )
    # 15 Dec 2020, 23:59 in Berlin: the replacement window of 2019 is still open.
    early = await run_job(ctx, "final-bundle", datetime(2020, 12, 15, 22, 59, tzinfo=UTC))
    assert early.period == "2018" and early.result["bundles"] == []
    due = datetime(2020, 12, 16, 1, 0, tzinfo=UTC)
    built = await run_job(ctx, "final-bundle", due)
    assert (built.period, built.result["bundles"]) == (
        "2019",
        [f"qpr-{LV_SH}-qualitaetsbericht-final-2019.zip"],
    )
    again = await run_job(ctx, "final-bundle", due + timedelta(days=1))
    assert not again.ran
    async with qb_server.db.read_session() as session:
        (bundle,) = (await session.scalars(select(Bundle))).all()
    with zipfile.ZipFile(qb_server.listener.ctx.blobs.path_for(bundle.sha256)) as archive:
        assert archive.read(REPORT) == latest


async def test_a_report_without_a_confirmed_registration_is_rejected_with_that_reason(
    qb_server: Server,
) -> None:
    async with qb_server.db.session() as session:
        await session.execute(delete(QbRegistration))
    reason, protocol = await _refusal(qb_server, (QB_DATA / REPORT).read_bytes())
    assert "REG-01" in reason
    (finding,) = [f for f in protocol["pruefung"]["befunde"] if f["regel"] == "REG-01"]
    assert finding["meldung"] == (
        f"Für IK {HOSPITAL}, Standort 01 ist für das Berichtsjahr 2019 keine bestätigte "
        "Registrierung vorhanden."
    )
