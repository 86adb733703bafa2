"""Registering the jobs with APScheduler inside ``serve``, with catch-up on start.

Every trigger calls ``run_job`` with the current time; claimed jobs then run at most
once per period however many processes or nodes share the database. At start, a
cron job whose last scheduled time passed while the server was down runs once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from qprserver.config import Settings, parse_schedule
from qprserver.jobs import claims
from qprserver.jobs.registry import JobContext, JobSpec, job_specs, previous_fire, run_job

log = logging.getLogger(__name__)


def trigger_for(spec: JobSpec, settings: Settings) -> Any:
    """The APScheduler trigger of a job."""
    kind, value = spec.schedule
    tz = ZoneInfo(settings.jobs.timezone)
    if kind == "cron":
        day, hour, minute = parse_schedule(str(value))
        return CronTrigger(day_of_week=day or "*", hour=hour, minute=minute, timezone=tz)
    return IntervalTrigger(seconds=int(value), timezone=tz)


def next_run(spec: JobSpec, settings: Settings, now: datetime) -> datetime | None:
    fire: datetime | None = trigger_for(spec, settings).get_next_fire_time(None, now)
    return fire


async def _run_logged(ctx: JobContext, name: str) -> None:
    # Each run is told by ``run_job`` (``job.run``); a failure's traceback is added here.
    try:
        await run_job(ctx, name, ctx.clock.now())
    except Exception:
        log.exception("job %s failed", name)


async def catch_up(ctx: JobContext, now: datetime) -> list[str]:
    """Run, once, each cron job whose last scheduled period is not done yet."""
    ran = []
    for spec in job_specs(ctx.settings).values():
        fire = previous_fire(spec, now, ctx.settings)
        if fire is None or not spec.claimed:
            continue
        period = spec.period(fire)
        if await claims.is_done(ctx.db, spec.name, period):
            continue
        outcome = await run_job(ctx, spec.name, fire)
        if outcome.ran:
            ran.append(spec.name)
    return ran


class JobScheduler:
    """The scheduler of one server process."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.scheduler = AsyncIOScheduler(timezone=ZoneInfo(ctx.settings.jobs.timezone))
        for spec in job_specs(ctx.settings).values():
            self.scheduler.add_job(
                _run_logged,
                trigger_for(spec, ctx.settings),
                args=(ctx, spec.name),
                id=spec.name,
                name=spec.description,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=3600,
            )

    async def start(self) -> None:
        try:
            await catch_up(self.ctx, self.ctx.clock.now())
        except Exception:
            log.exception("catch-up of missed jobs failed; the schedule goes on")
        self.scheduler.start()

    @property
    def running(self) -> bool:
        """True once catch-up is done and the schedule runs (``/readyz``)."""
        return bool(self.scheduler.running)

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
