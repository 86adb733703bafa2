"""Exactly-once job runs: a run is claimed in the database for its period.

The pair (job, period) is unique, so a rerun, a restart, or a second node never runs
the same period twice. A claim whose holder died is taken over once its lease has
expired; a failed run may be tried again.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from qprserver.db.engine import Database
from qprserver.db.models import JobRun

HOLDER = f"{socket.gethostname()}:{os.getpid()}"


async def claim(db: Database, job: str, period: str, now: datetime, lease: timedelta) -> bool:
    """Take the run of job for period; False when it is done or held by someone alive."""
    try:
        async with db.session() as session:
            session.add(
                JobRun(
                    job=job,
                    period=period,
                    status="running",
                    holder=HOLDER,
                    lease_until=now + lease,
                    started_at=now,
                    result="{}",
                )
            )
        return True
    except IntegrityError:
        pass
    async with db.session() as session:
        taken = await session.execute(
            update(JobRun)
            .where(
                JobRun.job == job,
                JobRun.period == period,
                or_(
                    JobRun.status == "failed",
                    (JobRun.status == "running") & (JobRun.lease_until < now),
                ),
            )
            .values(status="running", holder=HOLDER, lease_until=now + lease, started_at=now)
        )
        return bool(taken.rowcount)  # type: ignore[attr-defined]


async def finish(
    db: Database, job: str, period: str, now: datetime, result: dict[str, Any], *, ok: bool
) -> None:
    """Record the outcome of a claimed run."""
    async with db.session() as session:
        await session.execute(
            update(JobRun)
            .where(JobRun.job == job, JobRun.period == period, JobRun.holder == HOLDER)
            .values(
                status="done" if ok else "failed",
                finished_at=now,
                result=json.dumps(result, ensure_ascii=False, default=str),
            )
        )


async def record_unclaimed(
    db: Database,
    job: str,
    period: str,
    started: datetime,
    finished: datetime,
    result: dict[str, Any],
    *,
    ok: bool,
) -> None:
    """Keep the latest run of a job that is not claimed per period (``jobs list``).

    Such jobs run often (the mail sender every minute), so one row per job is
    updated in place rather than a row per run.
    """
    values = {
        "period": period,
        "status": "done" if ok else "failed",
        "holder": HOLDER,
        "lease_until": finished,
        "started_at": started,
        "finished_at": finished,
        "result": json.dumps(result, ensure_ascii=False, default=str),
    }
    for _ in range(2):
        async with db.session() as session:
            updated = await session.execute(update(JobRun).where(JobRun.job == job).values(values))
            if updated.rowcount:  # type: ignore[attr-defined]
                return
        try:
            async with db.session() as session:
                session.add(JobRun(job=job, **values))
            return
        except IntegrityError:
            continue  # another process inserted it first: update that row


async def last_runs(db: Database) -> dict[str, JobRun]:
    """The newest run of every job."""
    async with db.read_session() as session:
        rows = (await session.scalars(select(JobRun).order_by(JobRun.id))).all()
    return {row.job: row for row in rows}


async def is_done(db: Database, job: str, period: str) -> bool:
    async with db.read_session() as session:
        status = await session.scalar(
            select(JobRun.status).where(JobRun.job == job, JobRun.period == period)
        )
    return status == "done"
