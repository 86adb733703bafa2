"""A whole report year with the injected clock: registrations in and out of their
windows, confirmation, hospital deliveries of the real 2019 report (renamed per
registration), a rejection, a replacement, the reminder exactly once, C-1 parts and a
Null-Meldung (counted), the final bundle once with the latest versions, the positive
list, then the delivery list and who is missing. The correction phase, the confirmation
mails and the C-1 schema check: ``test_qb_correction.py``."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from lxml import etree
from sqlalchemy import select

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock
from qprserver.db.engine import Database
from qprserver.db.models import Bundle, MailMessage, UploadProtocol
from qprserver.errors import InvalidInput
from qprserver.jobs.registry import run_job
from qprserver.qb import lists, positive_list
from qprserver.service import job_context
from tests.conftest import QB_DATA
from tests.functional.harness import (
    ADMIN,
    HOSPITAL,
    IN_WINDOW,
    LV_SH,
    REGISTERED_AT,
    REPORT,
    Server,
    register_report,
    start_qb_server,
)

pytestmark = pytest.mark.skipif(
    not (QB_DATA / REPORT).exists(), reason="G-BA test data (../shared/data/qb) not present"
)

REMINDER_DAY = datetime(2020, 11, 1, 3, 0, tzinfo=UTC)
REPLACEMENTS = datetime(2020, 11, 25, 10, 0, tzinfo=UTC)
FINAL_DAY = datetime(2020, 12, 16, 1, 0, tzinfo=UTC)
OTHER = "260100034"  # on the positive list, never registers
QS_STELLE = "100100012"  # the QS-Stelle of the Land (region 01: SH)


@pytest.fixture
async def qb_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    srv = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


def _report(site: str, *, comment: bytes = b"", broken: bool = False) -> tuple[str, bytes]:
    """The real 2019 report as the report of ``site`` of the hospital."""
    root = etree.fromstring((QB_DATA / REPORT).read_bytes())
    number = root.find("Krankenhaus/Standortkontaktdaten/Standortnummer")
    assert number is not None
    number.text = site
    if broken:  # a required element gone: the schema rejects it (hart)
        name = root.find("Krankenhaus/Krankenhauskontaktdaten/Name")
        assert name is not None and name.getparent() is not None
        name.getparent().remove(name)  # type: ignore[union-attr]
    data = bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8")) + comment
    return f"{HOSPITAL}-{site}-2019-xml.xml", data


async def _deliver(
    server: Server, at: datetime, name: str, data: bytes, *, account: str = HOSPITAL
) -> bool:
    """Upload as the hospital (or ``account``) at ``at``; True when accepted."""
    server.listener.ctx.clock = FixedClock(at)
    try:
        async with (
            server.connect(account) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(f"/outbox/{name}", "wb") as f,
        ):
            await f.write(data)
    except asyncssh.SFTPFailure:
        return False
    return True


async def test_a_report_year_from_registration_to_the_list_of_who_is_missing(
    qb_server: Server,
) -> None:
    server = qb_server
    db = server.db
    # Registration: 01 (by the harness) and 02 in the window; 03 only late.
    await register_report(server, 2019, HOSPITAL, "02", REGISTERED_AT)
    with pytest.raises(InvalidInput, match=r"nachträglich vom 23\.11\.2020"):
        await register_report(server, 2019, HOSPITAL, "03", IN_WINDOW)

    # The positive list: a bad row refuses the whole file.
    bad = f"IK;Standort;Name;Adresse\n{HOSPITAL};01;Klinik;Kiel\n123456789;02;X;Y\n".encode()
    with pytest.raises(InvalidInput, match="line 3: IK 123456789 ungültig"):
        positive_list.parse(bad)
    good = (
        "IK;Standort;Name;Adresse\n"
        f"{HOSPITAL};01;Klinik Nord;Kiel\n{HOSPITAL};02;Klinik Süd;Kiel\n"
        f"{OTHER};00;Klinik Ost;Lübeck\n"
    ).encode()
    async with db.session() as session:
        await positive_list.replace(session, ADMIN, IN_WINDOW, 2019, positive_list.parse(good))

    # Hospital deliveries: 01 accepted, 02 rejected, 04 unregistered.
    assert await _deliver(server, IN_WINDOW, *_report("01"))
    assert not await _deliver(server, IN_WINDOW, *_report("02", broken=True))
    assert not await _deliver(server, IN_WINDOW, *_report("04"))

    # The reminder: three runs, one mail, to 02 only.
    ctx = job_context(server.settings, db, server.notifier, server.listener.ctx.blobs)
    for day in range(3):
        await run_job(ctx, "qb-reminders", REMINDER_DAY + timedelta(days=day))
    async with db.read_session() as session:
        reminded = (
            await session.scalars(
                select(MailMessage.to_addr).where(MailMessage.template == "qb_reminder")
            )
        ).all()
    assert reminded == [f"qb-{HOSPITAL}-02@klinik.example"]

    # Replacement window: 03 registers late and delivers; 01 is replaced.
    await register_report(server, 2019, HOSPITAL, "03", REPLACEMENTS)
    name_03, report_03 = _report("03")
    assert await _deliver(server, REPLACEMENTS, name_03, report_03)
    latest_01 = _report("01", comment=b"\n<!-- Ersatzlieferung -->\n")
    assert await _deliver(server, REPLACEMENTS, *latest_01)

    # Part C-1 from the QS-Stelle: data for 01, a Null-Meldung for 02; refused for the
    # late registration 03, from the hospital itself, and as a Null-Meldung that names
    # another report.
    await server.add_account(QS_STELLE, ["depositor", "qs-stelle"], email="qs@qs-stelle.example")
    await server.add_route("qb_c1", "SH", LV_SH)
    c1_day = REPLACEMENTS + timedelta(hours=1)
    land = f"{HOSPITAL}-01-2019-Land.xml"
    data = b"<TeilC1><Modul>HEP</Modul></TeilC1>"
    assert await _deliver(server, c1_day, land, data, account=QS_STELLE)
    null = f'<NullMeldung IK="{HOSPITAL}" Standort="02" Berichtsjahr="2019" Teil="Bund"/>'
    bund = f"{HOSPITAL}-02-2019-bund.xml"
    assert await _deliver(server, c1_day, bund, null.encode(), account=QS_STELLE)
    late = f"{HOSPITAL}-03-2019-Land.xml"
    assert not await _deliver(server, c1_day, late, data, account=QS_STELLE)
    assert not await _deliver(server, c1_day, f"{HOSPITAL}-02-2019-Land.xml", data)
    wrong = null.replace('Standort="02"', 'Standort="01"').encode()
    assert not await _deliver(server, c1_day, bund, wrong, account=QS_STELLE)
    async with db.read_session() as session:
        reasons = (
            await session.scalars(
                select(UploadProtocol.body).where(UploadProtocol.outcome == "rejected")
            )
        ).all()
    assert any("nicht bis zum 23.08.2020 registriert" in body for body in reasons)
    assert any("nur QS-Stellen (Konten mit der Rolle qs-stelle)" in body for body in reasons)
    assert any("Null-Meldung: erwartet wird <NullMeldung" in body for body in reasons)
    async with db.read_session() as session:
        accepted = (
            await session.scalars(
                select(UploadProtocol.body).where(
                    UploadProtocol.upload_name == land, UploadProtocol.outcome == "accepted"
                )
            )
        ).one()
    # No C-1 schema configured for 2019: the safe parse only, and the protocol says so.
    assert "nur sichere XML-Prüfung" in accepted

    # 1 Dec, 14 days before the C-1 deadline: the QS-Stelle of the Land is told, once,
    # which reports registered in time still lack its Land data (02 has only Bund).
    for day in range(3):
        await run_job(ctx, "qb-reminders", datetime(2020, 12, 1 + day, 3, tzinfo=UTC))
    async with db.read_session() as session:
        (c1_mail,) = (
            await session.scalars(
                select(MailMessage).where(MailMessage.template == "qb_c1_reminder")
            )
        ).all()
    assert c1_mail.to_addr == "qs@qs-stelle.example"
    assert f"IK {HOSPITAL}, Standort 02" in c1_mail.body_text
    assert "Standort 01" not in c1_mail.body_text and "Standort 03" not in c1_mail.body_text

    # The final bundle once, with the latest versions.
    async with db.session() as session:
        await accounts.update_account(session, ADMIN, REPLACEMENTS, LV_SH, bundles=True)
    assert (await run_job(ctx, "final-bundle", FINAL_DAY)).period == "2019"
    assert not (await run_job(ctx, "final-bundle", FINAL_DAY + timedelta(days=1))).ran
    async with db.read_session() as session:
        (bundle,) = (await session.scalars(select(Bundle))).all()
    with zipfile.ZipFile(server.listener.ctx.blobs.path_for(bundle.sha256)) as archive:
        assert sorted(n for n in archive.namelist() if n.endswith(".xml")) == sorted(
            [latest_01[0], name_03]
        )
        assert archive.read(latest_01[0]) == latest_01[1]

    # The lists for the G-BA.
    async with db.read_session() as session:
        delivered = await lists.delivery_list(session, 2019)
        missing = await lists.missing(session, 2019)
        status = await lists.status(session, 2019)
        registered = await lists.registrations(session, 2019)
    assert [(r["standort"], r["status"], r["nachregistriert"]) for r in registered] == [
        ("01", "bestätigt", False),
        ("02", "bestätigt", False),
        ("03", "bestätigt", True),
    ]
    assert [(r["standort"], r["version"]) for r in delivered] == [("01", 2), ("03", 1)]
    assert [(r["ik"], r["standort"], r["grund"]) for r in missing] == [
        (HOSPITAL, "02", "kein angenommener Bericht"),
        (OTHER, "00", "kein angenommener Bericht"),
        (HOSPITAL, "03", "registriert, nicht auf der Positivliste"),
    ]
    assert status == {
        "registriert": 3,
        "bestaetigt": 3,
        "nachregistriert": 1,
        "abweichung_gemeldet": 0,
        "korrigiert": 0,
        "bestaetigung_versandt": 0,
        "geliefert": 5,
        "angenommen": 2,
        "abgelehnt": 2,
        "ersetzt": 1,
        "erinnert": 1,
        "c1_erhalten": 2,
        "null_meldungen": 1,
        "positivliste": 3,
        "fehlend": 3,
    }
