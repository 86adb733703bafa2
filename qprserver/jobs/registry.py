"""The jobs qprserver runs: what each does, when, and which period a run belongs to."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from qprserver.audit import seal as audit_seal
from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings, parse_schedule
from qprserver.db.engine import Database
from qprserver.errors import InvalidInput
from qprserver.exchange import bundles, partials, retention
from qprserver.jobs import claims
from qprserver.notify import outbox as notify
from qprserver.storage.local import FileBlobStore


@dataclass
class JobContext:
    """Explicit inputs of every job."""

    db: Database
    settings: Settings
    blobs: FileBlobStore
    mailer: notify.Mailer
    # Leases are about liveness, so they follow the real clock even when a run is
    # made "as if" at another time.
    clock: Clock = field(default_factory=SystemClock)


Runner = Callable[[JobContext, datetime, bool], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class JobSpec:
    """One job: its schedule and how a moment maps to the period it works on."""

    name: str
    description: str
    runner: Runner
    # ("cron", "mon 02:00") or ("interval", seconds)
    schedule: tuple[str, str | int]
    # Claimed jobs run once per period across all processes and nodes; the others
    # are idempotent by themselves and run wherever they are due.
    claimed: bool = True

    def period(self, at: datetime, settings: Settings) -> str:
        kind, value = self.schedule
        tz = ZoneInfo(settings.jobs.timezone)
        if self.name == "bundles":
            return bundles.week_period(at, tz)[0]
        if self.name == "final-bundle":
            return settings.jobs.final_bundle_after or "off"
        if kind == "cron":
            return at.astimezone(tz).date().isoformat()
        step = int(value)
        return str(int(at.timestamp()) // step)


async def _digest(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    return {"queued": await notify.queue_digests(ctx.db, ctx.settings, at)}


async def _send(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    return await notify.send_pending(ctx.db, ctx.mailer, ctx.settings.mail, at)


async def _bundles(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    return await bundles.build_weekly(ctx.db, ctx.blobs, ctx.settings, at)


async def _final(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    return await bundles.build_final(ctx.db, ctx.blobs, ctx.settings, at)


async def _retention(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    return await retention.run_retention(
        ctx.db, ctx.blobs, ctx.settings, at, ctx.clock, dry_run=dry_run
    )


async def _audit_checkpoint(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    security = ctx.settings.security
    # Only the rows since the last checkpoint: cheap enough to run every few minutes.
    count, head = await audit_seal.verify_and_checkpoint(
        ctx.db, security.audit_key, security.audit_checkpoint, ctx.clock.now(), full=False
    )
    return {"checked": count, "head": head.id}


async def _sweep(ctx: JobContext, at: datetime, dry_run: bool) -> dict[str, Any]:
    # Partial uploads kept past their time go; the rest of those kept stay.
    expired = await partials.expire(ctx.db, at, ctx.settings.storage.partial_keep)
    for temp_name in expired:
        ctx.blobs.remove_temp(temp_name)
    kept = await partials.kept_temp_names(ctx.db)
    # An upload untouched for longer than a session may stay idle is abandoned.
    stale = ctx.settings.server.idle_timeout + 3600
    removed = ctx.blobs.sweep_temp(older_than_seconds=stale, now=time.time(), spare=kept)
    return {"temp_files_removed": removed, "partial_uploads_expired": len(expired)}


def job_specs(settings: Settings) -> dict[str, JobSpec]:
    """Every job with its schedule from the settings."""
    jobs = settings.jobs
    specs = [
        JobSpec(
            "mail-digest",
            "Sammelmails über neue Dokumente",
            _digest,
            ("interval", settings.mail.digest_interval),
        ),
        JobSpec(
            "mail-send",
            "Versand der Mails aus dem Postausgang",
            _send,
            ("interval", jobs.send_interval),
            claimed=False,
        ),
        JobSpec(
            "bundles", "Wochenpakete der vergangenen ISO-Woche", _bundles, ("cron", jobs.bundles)
        ),
        JobSpec(
            "final-bundle", "Abschlusspaket nach der letzten Frist", _final, ("cron", jobs.bundles)
        ),
        JobSpec(
            "retention",
            "Löschfristen und Aufräumen der Ablage",
            _retention,
            ("cron", jobs.retention),
        ),
        JobSpec(
            "sweep",
            "Entfernen abgebrochener Uploads",
            _sweep,
            ("interval", jobs.sweep_interval),
            claimed=False,
        ),
        JobSpec(
            "audit-checkpoint",
            "Prüfung der neuesten Audit-Einträge und Fortschreiben des Prüfpunkts",
            _audit_checkpoint,
            ("interval", jobs.checkpoint_interval),
            # Idempotent (a second run finds the head already checked); a broken chain
            # is then reported by every process, which is what an operator wants.
            claimed=False,
        ),
    ]
    return {spec.name: spec for spec in specs}


def previous_fire(spec: JobSpec, at: datetime, settings: Settings) -> datetime | None:
    """The last scheduled time at or before ``at`` (cron jobs), for catch-up."""
    kind, value = spec.schedule
    if kind != "cron":
        return None
    day, hour, minute = parse_schedule(str(value))
    tz = ZoneInfo(settings.jobs.timezone)
    local = at.astimezone(tz)
    for back in range(0, 8):
        candidate_day = (local - timedelta(days=back)).date()
        candidate = datetime(
            candidate_day.year, candidate_day.month, candidate_day.day, hour, minute, tzinfo=tz
        )
        if candidate > local:
            continue
        if day is None or candidate.strftime("%a").lower()[:3] == day:
            return candidate
    return None


@dataclass(frozen=True)
class RunOutcome:
    job: str
    period: str
    ran: bool
    result: dict[str, Any]


async def run_job(ctx: JobContext, name: str, at: datetime, *, dry_run: bool = False) -> RunOutcome:
    """Run one job as if at ``at``; a claimed period already done is not run again."""
    specs = job_specs(ctx.settings)
    spec = specs.get(name)
    if spec is None:
        raise InvalidInput(f"unknown job {name!r}; jobs: {', '.join(sorted(specs))}")
    if dry_run and name != "retention":
        raise InvalidInput("--dry-run is supported by the retention job only")
    period = spec.period(at, ctx.settings)
    if dry_run:
        return RunOutcome(name, period, True, await spec.runner(ctx, at, dry_run))
    if not spec.claimed:
        started = ctx.clock.now()
        try:
            result = await spec.runner(ctx, at, False)
        except Exception as exc:
            failed = {"error": repr(exc)}
            await claims.record_unclaimed(
                ctx.db, name, period, started, ctx.clock.now(), failed, ok=False
            )
            raise
        await claims.record_unclaimed(
            ctx.db, name, period, started, ctx.clock.now(), result, ok=True
        )
        return RunOutcome(name, period, True, result)
    lease = timedelta(seconds=ctx.settings.jobs.lease)
    if not await claims.claim(ctx.db, name, period, ctx.clock.now(), lease):
        return RunOutcome(name, period, False, {"skipped": "already done or running"})
    try:
        result = await spec.runner(ctx, at, False)
    except Exception as exc:
        await claims.finish(ctx.db, name, period, ctx.clock.now(), {"error": repr(exc)}, ok=False)
        raise
    await claims.finish(ctx.db, name, period, ctx.clock.now(), result, ok=True)
    return RunOutcome(name, period, True, result)
