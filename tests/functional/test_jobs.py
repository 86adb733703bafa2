"""Scheduled jobs with an injected clock: bundles, exactly-once, catch-up, retention."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import zipfile
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock, SystemClock
from qprserver.db.models import Bundle, Delivery, JobRun
from qprserver.jobs.registry import JobContext, run_job
from qprserver.jobs.scheduler import catch_up
from qprserver.service import job_context
from tests.functional.harness import ADMIN, FACILITY_NW, LV_NW, MD_NW, Server, pdf_bytes

WEEK45 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)  # Tuesday of ISO week 45
WEEK46 = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)
MONDAY46 = datetime(2026, 11, 9, 1, 0, tzinfo=UTC)  # 02:00 in Berlin
MONDAY47 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)


async def _put(server: Server, name: str, data: bytes, at: datetime) -> None:
    server.listener.ctx.clock = FixedClock(at)
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as f,
    ):
        await f.write(data)


async def _enable_bundles(server: Server, ik: str = LV_NW) -> None:
    async with server.db.session() as session:
        await accounts.update_account(session, ADMIN, WEEK45, ik, bundles=True)


def _ctx(server: Server) -> JobContext:
    return job_context(server.settings, server.db, server.notifier, server.listener.ctx.blobs)


async def _bundles(server: Server) -> list[Bundle]:
    async with server.db.read_session() as session:
        return list((await session.scalars(select(Bundle).order_by(Bundle.id))).all())


def _read_zip(server: Server, bundle: Bundle) -> zipfile.ZipFile:
    path = server.listener.ctx.blobs.path_for(bundle.sha256)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bundle.sha256
    return zipfile.ZipFile(path)


async def test_deliveries_across_two_weeks_give_two_bundles_with_the_right_members(
    server: Server,
) -> None:
    await _enable_bundles(server)
    a, b, c = (f"{FACILITY_NW}_bericht_{x}.pdf" for x in "abc")
    await _put(server, a, pdf_bytes(seed=b"a"), WEEK45)
    await _put(server, b, pdf_bytes(seed=b"b"), WEEK45 + timedelta(days=1))
    await _put(server, c, pdf_bytes(seed=b"c"), WEEK46)
    first = await run_job(_ctx(server), "bundles", MONDAY46)
    second = await run_job(_ctx(server), "bundles", MONDAY47)
    assert (first.period, second.period) == ("2026-W45", "2026-W46")
    bundles = await _bundles(server)
    assert [b.name for b in bundles] == [
        f"qpr-{LV_NW}-2026-W45.zip",
        f"qpr-{LV_NW}-2026-W46.zip",
    ]
    with _read_zip(server, bundles[0]) as archive:
        assert sorted(archive.namelist()) == sorted(["MANIFEST.csv", a, b])
        manifest = list(
            csv.DictReader(io.StringIO(archive.read("MANIFEST.csv").decode()), delimiter=";")
        )
        assert {row["datei"] for row in manifest} == {a, b}
        for row in manifest:
            member = archive.read(row["datei"])
            assert hashlib.sha256(member).hexdigest() == row["sha256"]
            assert int(row["groesse"]) == len(member)
            assert row["betroffene_ik"] == FACILITY_NW and row["absender_ik"] == MD_NW
        assert archive.getinfo(a).compress_type == zipfile.ZIP_STORED
    with _read_zip(server, bundles[1]) as archive:
        assert sorted(archive.namelist()) == sorted(["MANIFEST.csv", c])
        assert archive.read(c) == pdf_bytes(seed=b"c")
    # The facility has no bundles switched on: it gets none.
    async with server.db.read_session() as session:
        lv = await accounts.get_account(session, LV_NW)
    assert {b.recipient_id for b in bundles} == {lv.id}


async def test_only_the_latest_version_goes_into_the_bundle(server: Server) -> None:
    await _enable_bundles(server)
    name = f"{FACILITY_NW}_bericht.pdf"
    await _put(server, name, pdf_bytes(seed=b"v1"), WEEK45)
    await _put(server, name, pdf_bytes(seed=b"v2"), WEEK45 + timedelta(hours=2))
    await run_job(_ctx(server), "bundles", MONDAY46)
    (bundle,) = await _bundles(server)
    with _read_zip(server, bundle) as archive:
        assert archive.read(name) == pdf_bytes(seed=b"v2")
        manifest = archive.read("MANIFEST.csv").decode()
        assert ";2;" in manifest  # version 2


async def test_running_the_job_twice_or_racing_yields_one_bundle(server: Server) -> None:
    await _enable_bundles(server)
    await _put(server, f"{FACILITY_NW}_x.pdf", pdf_bytes(), WEEK45)
    outcomes = await asyncio.gather(
        run_job(_ctx(server), "bundles", MONDAY46),
        run_job(_ctx(server), "bundles", MONDAY46 + timedelta(minutes=1)),
    )
    again = await run_job(_ctx(server), "bundles", MONDAY46 + timedelta(hours=3))
    assert sorted(o.ran for o in outcomes) == [False, True]
    assert again.ran is False
    assert len(await _bundles(server)) == 1


async def test_an_empty_week_yields_no_bundle(server: Server) -> None:
    await _enable_bundles(server)
    outcome = await run_job(_ctx(server), "bundles", MONDAY46)
    assert outcome.ran and outcome.result["bundles"] == []
    assert await _bundles(server) == []


async def test_a_run_missed_while_down_is_caught_up_once_on_start(server: Server) -> None:
    await _enable_bundles(server)
    await _put(server, f"{FACILITY_NW}_x.pdf", pdf_bytes(), WEEK45)
    # Down over Monday 02:00; started on Wednesday.
    wednesday = MONDAY46 + timedelta(days=2)
    ctx = _ctx(server)
    ctx.clock = FixedClock(wednesday)
    first = await catch_up(ctx, wednesday)
    second = await catch_up(ctx, wednesday + timedelta(hours=1))
    assert "bundles" in first
    assert "bundles" not in second
    assert [b.period for b in await _bundles(server)] == ["2026-W45"]


async def test_a_claim_whose_holder_died_is_taken_over_after_the_lease(server: Server) -> None:
    from qprserver.jobs import claims

    lease = timedelta(minutes=10)
    assert await claims.claim(server.db, "bundles", "2026-W45", WEEK45, lease)
    assert not await claims.claim(
        server.db, "bundles", "2026-W45", WEEK45 + timedelta(minutes=5), lease
    )
    assert await claims.claim(
        server.db, "bundles", "2026-W45", WEEK45 + timedelta(minutes=11), lease
    )
    async with server.db.read_session() as session:
        assert await session.scalar(select(func.count()).select_from(JobRun)) == 1


async def test_retention_removes_exactly_what_is_due_and_its_blobs(server: Server) -> None:
    old = f"{FACILITY_NW}_alt.pdf"
    shared = f"{FACILITY_NW}_geteilt.pdf"
    await _put(server, old, pdf_bytes(seed=b"old"), WEEK45)
    await _put(server, shared, pdf_bytes(seed=b"shared"), WEEK45)
    # LV NW collects both; the facility leaves them in its inbox.
    for name in (old, shared):
        async with (
            server.connect(LV_NW) as conn,
            conn.start_sftp_client() as sftp,
        ):
            server.listener.ctx.clock = FixedClock(WEEK45 + timedelta(days=1))
            await sftp.remove(f"/inbox/{name}")
    # The same bytes as `shared` arrive again much later under another name: a live
    # delivery keeps the shared blob.
    await _put(
        server, f"{FACILITY_NW}_neu.pdf", pdf_bytes(seed=b"shared"), WEEK45 + timedelta(days=40)
    )
    blobs = server.listener.ctx.blobs
    old_sha = hashlib.sha256(pdf_bytes(seed=b"old")).hexdigest()
    shared_sha = hashlib.sha256(pdf_bytes(seed=b"shared")).hexdigest()
    at = WEEK45 + timedelta(days=44)
    ctx = _ctx(server)
    # The blobs were stored moments ago: only past their grace period may they go.
    ctx.clock = FixedClock(SystemClock().now() + timedelta(hours=2))
    dry = await run_job(ctx, "retention", at, dry_run=True)
    assert sorted(d["name"] for d in dry.result["deliveries"]) == [old, old, shared, shared]
    assert blobs.exists(old_sha)  # a dry run changes nothing
    outcome = await run_job(ctx, "retention", at)
    assert outcome.result["blobs_deleted"] == [old_sha]
    assert not blobs.exists(old_sha)
    assert blobs.exists(shared_sha)
    async with server.db.read_session() as session:
        left = sorted((await session.scalars(select(Delivery.name))).all())
    assert left == [f"{FACILITY_NW}_neu.pdf", f"{FACILITY_NW}_neu.pdf"]
