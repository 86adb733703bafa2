"""The reminder 14 days before the hospital deadline: once per registration and year
without an accepted report, however often and from however many processes it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.db.engine import Database
from qprserver.db.models import MailMessage, QbRegistration
from qprserver.jobs.registry import run_job
from qprserver.service import job_context
from tests.conftest import QB_DATA
from tests.functional.conftest import Instance
from tests.functional.harness import (
    HOSPITAL,
    REGISTERED_AT,
    REPORT,
    Server,
    confirmed_registration,
    register_report,
    run_job_in_two_processes,
    start_qb_server,
)

# 1 Nov 2020: 14 days before the hospital deadline of report year 2019 (15 Nov).
REMINDER_DAY = datetime(2020, 11, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
async def qb_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    srv = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


async def _reminders(db: Database) -> list[MailMessage]:
    async with db.read_session() as session:
        query = select(MailMessage).where(MailMessage.template == "qb_reminder")
        return list((await session.scalars(query.order_by(MailMessage.id))).all())


@pytest.mark.skipif(not (QB_DATA / REPORT).exists(), reason="G-BA test data not present")
async def test_only_registrations_without_an_accepted_report_are_reminded_once(
    qb_server: Server,
) -> None:
    # Site 01 (the real 2019 report) delivers; sites 02 and 99 do not.
    await register_report(qb_server, 2019, HOSPITAL, "02", REGISTERED_AT)
    await register_report(qb_server, 2019, HOSPITAL, "99", REGISTERED_AT)
    async with (
        qb_server.connect(HOSPITAL) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{REPORT}", "wb") as f,
    ):
        await f.write((QB_DATA / REPORT).read_bytes())
    ctx = job_context(
        qb_server.settings, qb_server.db, qb_server.notifier, qb_server.listener.ctx.blobs
    )
    before = await run_job(ctx, "qb-reminders", REMINDER_DAY - timedelta(days=1))
    assert (before.result["years"], before.result["reminded"]) == ([], 0)
    runs = [
        await run_job(ctx, "qb-reminders", REMINDER_DAY + timedelta(days=day)) for day in range(3)
    ]
    assert [run.result["reminded"] for run in runs] == [2, 0, 0]
    mails = await _reminders(qb_server.db)
    assert sorted(m.to_addr for m in mails) == [
        f"qb-{HOSPITAL}-02@klinik.example",
        f"qb-{HOSPITAL}-99@klinik.example",
    ]
    assert "15.11.2020" in mails[0].body_text and "Standort 02" in mails[0].subject


def test_two_processes_running_the_job_at_once_remind_each_registration_once(
    instance: Instance,
) -> None:
    sites = [f"{n:02d}" for n in range(1, 21)]

    async def add(session: AsyncSession) -> None:
        session.add_all(confirmed_registration(site) for site in sites)

    instance.in_session(add)
    results = run_job_in_two_processes(
        instance.config, "qb-reminders", (REMINDER_DAY, REMINDER_DAY + timedelta(days=1))
    )
    # Between them the two runs reminded every registration, neither one twice.
    assert sum(result["result"]["reminded"] for result in results) == 20

    async def count(session: AsyncSession) -> tuple[int, int, int]:
        mails = select(MailMessage.dedupe_key).where(MailMessage.template == "qb_reminder")
        keys = (await session.scalars(mails)).all()
        reminded = await session.scalar(
            select(func.count(QbRegistration.id)).where(QbRegistration.reminded_at.is_not(None))
        )
        return len(keys), len(set(keys)), reminded or 0

    assert instance.in_session(count) == (20, 20, 20)
