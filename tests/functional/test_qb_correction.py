"""The report year after the registration window: the mismatches the QS-Stellen report
(a file with a bad row imports nothing), the correction by the mailed link inside the
phase and its refusal after, the confirmation mails exactly once (three runs, two
processes), and part C-1 against the year's C-1 schema with the result mail read from a
real SMTP server."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.clock import FixedClock
from qprserver.db.engine import Database
from qprserver.db.models import Account, MailMessage, QbRegistration, UploadProtocol
from qprserver.errors import InvalidInput
from qprserver.jobs.registry import run_job
from qprserver.notify.qb_mails import QB_CORRECT_PATH
from qprserver.qb import correction, lists
from qprserver.qb import registrations as qb_registrations
from qprserver.service import job_context
from tests.conftest import QB_DATA
from tests.functional.conftest import Instance
from tests.functional.harness import (
    ADMIN,
    HOSPITAL,
    LV_SH,
    REGISTERED_AT,
    Server,
    confirmed_registration,
    register_report,
    run_job_in_two_processes,
    start_qb_server,
)
from tests.functional.smtp import SmtpServer
from tests.functional.web import csrf_of, make_web

# Report year 2019: registration 12 Jul – 23 Aug 2020, correction 24 Aug – 20 Sep,
# confirmation mails from 21 Sep (all days in Berlin).
CORRECTION_DAY = datetime(2020, 8, 25, 9, 0, tzinfo=UTC)
PHASE_OVER = datetime(2020, 9, 21, 3, 0, tzinfo=UTC)
C1_DAY = datetime(2020, 11, 25, 11, 0, tzinfo=UTC)
QS_STELLE = "100100012"  # the QS-Stelle of the Land (region 01: SH)
C1_SCHEMA = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="TeilC1">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="Modul" type="xs:string" maxOccurs="unbounded"/>
      </xs:sequence>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""


@pytest.fixture
async def qb_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    schema = tmp_path / "c1-2019.xsd"
    schema.write_text(C1_SCHEMA, encoding="utf-8")
    srv = await start_qb_server(
        tmp_path,
        db,
        QB_DATA / "qb-2019-schema.xsd",
        year_settings={"c1_schema": schema},
    )
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


async def _mails(db: Database, template: str) -> list[MailMessage]:
    async with db.read_session() as session:
        query = select(MailMessage).where(MailMessage.template == template)
        return list((await session.scalars(query.order_by(MailMessage.id))).all())


async def _registration(db: Database, site: str) -> QbRegistration:
    async with db.read_session() as session:
        found = await session.scalar(
            select(QbRegistration).where(QbRegistration.ik == HOSPITAL, QbRegistration.site == site)
        )
    assert found is not None
    return found


async def _import(server: Server, at: datetime, text: str) -> list[dict[str, object]]:
    rows = correction.parse(text.encode())
    async with server.db.session() as session:
        return await correction.import_mismatches(
            session, ADMIN, at, 2019, rows, qb=server.settings.qb, notifier=server.notifier
        )


def _link(mail: MailMessage) -> str:
    found = re.search(r"https?://[^/\s]+(" + re.escape(QB_CORRECT_PATH) + r"\S+)", mail.body_text)
    assert found is not None, mail.body_text
    return found.group(1)


async def test_mismatches_are_corrected_by_the_link_in_the_phase_and_then_confirmed_once(
    qb_server: Server,
) -> None:
    server, db = qb_server, qb_server.db
    await register_report(server, 2019, HOSPITAL, "02", REGISTERED_AT)
    good = (
        "IK;Standortnummer;Grund\n"
        f"{HOSPITAL};01;Standort 01 liegt der QS-Stelle als 00 vor\n"
        f"{HOSPITAL};02;Standort 02 ist bei der QS-Stelle unbekannt\n"
    )

    # Only in the correction phase; and a row naming no registration imports nothing.
    with pytest.raises(InvalidInput, match=r"only in the correction phase 24\.08\.2020–20\.09"):
        await _import(server, REGISTERED_AT, good)
    with pytest.raises(
        InvalidInput,
        match=rf"1 bad rows, nothing imported: line 4: IK {HOSPITAL} Standort 05 is not "
        "registered for 2019",
    ):
        await _import(server, CORRECTION_DAY, good + f"{HOSPITAL};05;unbekannt\n")
    assert await _mails(db, "qb_correction") == []
    assert (await _registration(db, "01")).mismatch is None

    # The good file: one mail per registration named, each with its own link.
    told = await _import(server, CORRECTION_DAY, good)
    assert [(row["standort"], row["email"]) for row in told] == [
        ("01", f"qb-{HOSPITAL}-01@klinik.example"),
        ("02", f"qb-{HOSPITAL}-02@klinik.example"),
    ]
    mail_01, mail_02 = await _mails(db, "qb_correction")
    assert "Standort 02 ist bei der QS-Stelle unbekannt" in mail_02.body_text
    assert "20.09.2020" in mail_02.subject and "Standort 02" in mail_02.subject

    # 02 corrects by its link: the page shows the registration; a Standort taken by
    # another registration and a bad one are refused, the link stays usable; then 03.
    web = make_web(server)
    web.clock.advance(CORRECTION_DAY + timedelta(days=3) - web.clock.now())
    path = _link(mail_02)
    async with web.client() as client:
        page = await client.get(path)
        assert page.status_code == 200
        assert "Standort 02 ist bei der QS-Stelle unbekannt" in page.text
        assert 'value="02"' in page.text
        data = {"csrf": csrf_of(page.text), "ik": HOSPITAL}
        taken = await client.post(path, data={**data, "site": "01"})
        assert taken.status_code == 400 and "bereits eine Registrierung" in taken.text
        bad = await client.post(path, data={**data, "site": "3"})
        assert bad.status_code == 400 and "Standortnummer: zwei Ziffern" in bad.text
        assert 'value="3"' in bad.text  # what was typed stays
        done = await client.post(path, data={**data, "site": "03"})
        assert done.status_code == 200 and "IK 260100023, Standort 03" in done.text
        again = await client.post(path, data={**data, "site": "04"})
        assert again.status_code == 400 and "Korrekturlink" in again.text
        assert f"meldet sich jetzt als {HOSPITAL}-03 an" in done.text
    corrected = await _registration(db, "03")
    assert corrected.corrected_at is not None and corrected.mismatch is not None
    # The registration's account follows: same account, the new login; the old is gone.
    async with db.read_session() as session:
        logins = set((await session.scalars(select(Account.login))).all())
        account = await session.get_one(Account, corrected.account_id)
    assert account.login == f"{HOSPITAL}-03" and account.site == "03"
    assert f"{HOSPITAL}-02" not in logins and f"{HOSPITAL}-01" in logins
    async with db.read_session() as session:
        assert await qb_registrations.confirmed(session, 2019, HOSPITAL, "03")
        assert not await qb_registrations.confirmed(session, 2019, HOSPITAL, "02")

    # After the phase: 01's link no longer holds, and IK/Standort are fixed.
    web.clock.advance(PHASE_OVER - web.clock.now())
    path = _link(mail_01)
    async with web.client() as client:
        assert (await client.get(path)).status_code == 404
        page = await client.get("/berichtsjahr/registrieren")
        late = await client.post(path, data={"csrf": csrf_of(page.text), "ik": HOSPITAL})
        assert late.status_code == 400 and "Korrekturlink" in late.text
    async with db.session() as session:
        reg = await session.get_one(QbRegistration, (await _registration(db, "01")).id)
        with pytest.raises(InvalidInput, match="sind festgeschrieben: sie lassen sich nur in"):
            await correction.change_identity(
                session, ADMIN, PHASE_OVER, reg, ik=HOSPITAL, site="00", qb=server.settings.qb
            )
    assert (await _registration(db, "01")).corrected_at is None

    # The confirmation mails: not before the day after the phase; then once each.
    ctx = job_context(server.settings, db, server.notifier, server.listener.ctx.blobs)
    early = await run_job(ctx, "qb-confirmations", PHASE_OVER - timedelta(days=1))
    assert (early.result["years"], early.result["confirmed"]) == ([], 0)
    runs = [
        await run_job(ctx, "qb-confirmations", PHASE_OVER + timedelta(days=day)) for day in range(3)
    ]
    assert [run.result["confirmed"] for run in runs] == [2, 0, 0]
    confirmed = await _mails(db, "qb_registration_confirmed")
    assert sorted(m.to_addr for m in confirmed) == [
        f"qb-{HOSPITAL}-01@klinik.example",
        f"qb-{HOSPITAL}-02@klinik.example",
    ]
    corrected_mail = next(m for m in confirmed if m.to_addr.endswith("-02@klinik.example"))
    assert "Standortnummer:   03" in corrected_mail.body_text
    assert "Zulassung:        Plankrankenhaus" in corrected_mail.body_text
    # A late registration (replacement window) gets its confirmation on the next run.
    await register_report(server, 2019, HOSPITAL, "04", C1_DAY)
    late_run = await run_job(ctx, "qb-confirmations", C1_DAY + timedelta(days=1))
    assert late_run.result["confirmed"] == 1
    late_mail = (await _mails(db, "qb_registration_confirmed"))[-1]
    assert late_mail.to_addr == f"qb-{HOSPITAL}-04@klinik.example"
    assert "(nachträgliche Registrierung)" in late_mail.body_text

    async with db.read_session() as session:
        status = await lists.status(session, 2019)
    assert (
        status["abweichung_gemeldet"],
        status["korrigiert"],
        status["bestaetigung_versandt"],
    ) == (2, 1, 3)


async def test_a_c1_file_is_checked_against_the_years_c1_schema_and_the_result_mailed(
    qb_server: Server, smtp: SmtpServer
) -> None:
    server, db = qb_server, qb_server.db
    await register_report(server, 2019, HOSPITAL, "02", REGISTERED_AT)
    await server.add_account(QS_STELLE, ["depositor", "qs-stelle"], email="qs@qs-stelle.example")
    await server.add_route("qb_c1", "SH", LV_SH)
    server.listener.ctx.clock = FixedClock(C1_DAY)

    async def deliver(name: str, data: bytes) -> bool:
        try:
            async with (
                server.connect(QS_STELLE) as conn,
                conn.start_sftp_client() as sftp,
                sftp.open(f"/outbox/{name}", "wb") as f,
            ):
                await f.write(data)
        except asyncssh.SFTPFailure:
            return False
        return True

    good = f"{HOSPITAL}-01-2019-Land.xml"
    bad = f"{HOSPITAL}-01-2019-bund.xml"
    null = f"{HOSPITAL}-02-2019-Land.xml"
    assert await deliver(good, b"<TeilC1><Modul>HEP</Modul></TeilC1>")
    assert not await deliver(bad, b"<TeilC1><Leistung>HEP</Leistung></TeilC1>")
    report = f'<NullMeldung IK="{HOSPITAL}" Standort="02" Berichtsjahr="2019" Teil="Land"/>'
    assert await deliver(null, report.encode())

    async with db.read_session() as session:
        protocols = {
            p.upload_name: json.loads(p.body) for p in await session.scalars(select(UploadProtocol))
        }
        status = await lists.status(session, 2019)
    checked = protocols[good]["pruefung"]["pruefung"]
    assert checked == "sichere XML-Prüfung und XML-Schema c1-2019.xsd"
    (reason,) = protocols[bad]["gruende"]
    assert reason.startswith(
        f"Teil C-1 {bad} abgelehnt: XML-Schema c1-2019.xsd: Element 'Leistung'"
    )
    assert protocols[null]["pruefung"]["null_meldung"] is True
    assert (status["c1_erhalten"], status["null_meldungen"]) == (2, 1)

    # The result mails reach the QS-Stelle over SMTP.
    settings = server.settings.model_copy(
        update={"mail": server.settings.mail.model_copy(update={"smtp_port": smtp.port})}
    )
    ctx = job_context(settings, db, server.notifier, server.listener.ctx.blobs)
    await run_job(ctx, "mail-send", C1_DAY)
    results = {str(m["Subject"]): m for m in smtp.messages if m["To"] == "qs@qs-stelle.example"}
    rejected = results[f"QPR-Portal: {bad} abgelehnt"]
    body = rejected.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "[XSD-01, hart] Element 'Leistung': This element is not expected." in text
    assert f"QPR-Portal: {good} angenommen" in results
    assert f"QPR-Portal: {null} angenommen" in results


def test_two_processes_confirming_at_once_mail_each_registration_once(
    instance: Instance,
) -> None:
    sites = [f"{n:02d}" for n in range(1, 21)]

    async def add(session: AsyncSession) -> None:
        session.add_all(confirmed_registration(site, basis="hochschulklinik") for site in sites)

    instance.in_session(add)
    results = run_job_in_two_processes(
        instance.config, "qb-confirmations", (PHASE_OVER, PHASE_OVER + timedelta(days=1))
    )
    assert sum(result["result"]["confirmed"] for result in results) == 20

    async def count(session: AsyncSession) -> tuple[int, int, int]:
        mails = select(MailMessage.dedupe_key).where(
            MailMessage.template == "qb_registration_confirmed"
        )
        keys = (await session.scalars(mails)).all()
        sent = (
            await session.scalars(
                select(QbRegistration.id).where(QbRegistration.confirmation_sent_at.is_not(None))
            )
        ).all()
        return len(keys), len(set(keys)), len(sent)

    assert instance.in_session(count) == (20, 20, 20)
    status = json.loads(instance.ok("qb", "status", "2019", "--json"))
    assert status["bestaetigung_versandt"] == 20


async def test_a_correction_link_shows_its_registration_until_the_phase_ends(
    qb_server: Server,
) -> None:
    await _import(
        qb_server, CORRECTION_DAY, f"IK;Standort;Grund\n{HOSPITAL};01;Standort abweichend\n"
    )
    (mail,) = await _mails(qb_server.db, "qb_correction")
    token = _link(mail).removeprefix(QB_CORRECT_PATH)
    async with qb_server.db.read_session() as session:
        reg = await correction.pending(session, CORRECTION_DAY, token)
        assert reg is not None and (reg.site, reg.mismatch) == ("01", "Standort abweichend")
        # The link ends with the last day of the phase (20 Sep, Berlin).
        last = datetime(2020, 9, 20, 21, 59, tzinfo=UTC)
        assert await correction.pending(session, last, token) is not None
        assert await correction.pending(session, last + timedelta(minutes=1), token) is None
