"""The jobs qprserver runs: what each does, when, and which period a run belongs to.

Each ``JobSpec`` carries its own period function (``every``, ``daily``, ``weekly``,
``yearly``, or one of its own), which maps a moment to the key of the period a run
works on: claimed jobs run once per key. A job that can show what it would do
without doing it offers a ``dry_run`` function; ``jobs run --dry-run`` and
``jobs list`` read that capability from the spec, never from the job's name.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from qprserver.accounts import websessions
from qprserver.audit import seal as audit_seal
from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings, parse_schedule
from qprserver.db.engine import Database
from qprserver.errors import InvalidInput
from qprserver.exchange import bundles, partials, retention
from qprserver.jobs import claims
from qprserver.notify import outbox
from qprserver.notify.smtp import Mailer
from qprserver.observability import events
from qprserver.qb.calendar import final_bundle_year
from qprserver.storage.base import BlobStore


@dataclass
class JobContext:
    """Explicit inputs of every job."""

    db: Database
    settings: Settings
    blobs: BlobStore
    notifier: outbox.Notifier
    mailer: Mailer
    # Leases are about liveness, so they follow the real clock even when a run is
    # made "as if" at another time.
    clock: Clock = field(default_factory=SystemClock)


Runner = Callable[[JobContext, datetime], Awaitable[dict[str, Any]]]
# The key of the period a moment belongs to ("2026-11-29", "2026-W45", "2026", ...).
Period = Callable[[datetime], str]


def every(seconds: int) -> Period:
    """Periods of an interval job: consecutive ``seconds``-long slices of Unix time."""
    if seconds <= 0:
        raise ValueError("an interval must be positive")
    return lambda at: str(int(at.timestamp()) // seconds)


def daily(tz: ZoneInfo) -> Period:
    """Periods of a daily job: the local calendar day (``2026-11-29``)."""
    return lambda at: at.astimezone(tz).date().isoformat()


def weekly(tz: ZoneInfo) -> Period:
    """Periods of a weekly job that works on the week before: that ISO week (``2026-W45``)."""
    return lambda at: bundles.week_period(at, tz)[0]


def yearly(tz: ZoneInfo) -> Period:
    """Periods of a yearly job: the local calendar year (``2026``)."""
    return lambda at: str(at.astimezone(tz).year)


def once(key: str) -> Period:
    """One period for every moment: a job that runs once per ``key``."""
    return lambda at: key


def final_year(settings: Settings) -> Period:
    """Periods of the final bundle: the latest report year past its replacement window."""

    def period(at: datetime) -> str:
        year = final_bundle_year(settings.qb, at)
        return "none" if year is None else str(year)

    return period


@dataclass(frozen=True)
class JobSpec:
    """One job: its schedule, the period a moment belongs to, and what it can do."""

    name: str
    description: str
    runner: Runner
    # ("cron", "mon 02:00") or ("interval", seconds)
    schedule: tuple[str, str | int]
    period: Period
    # Claimed jobs run once per period across all processes and nodes; the others
    # are idempotent by themselves and run wherever they are due.
    claimed: bool = True
    # What the job would do, reported without doing it; None: the job offers none.
    dry_run: Runner | None = None


async def _digest(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return {"queued": await outbox.queue_digests(ctx.db, ctx.notifier, ctx.settings, at)}


async def _send(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return await outbox.send_pending(ctx.db, ctx.mailer, ctx.settings.mail, at)


async def _bundles(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return await bundles.build_weekly(ctx.db, ctx.blobs, ctx.notifier, ctx.settings, at)


async def _final(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return await bundles.build_final(ctx.db, ctx.blobs, ctx.notifier, ctx.settings, at)


async def _retention(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return await retention.run_retention(
        ctx.db, ctx.blobs, ctx.settings, at, ctx.clock, dry_run=False
    )


async def _retention_dry_run(ctx: JobContext, at: datetime) -> dict[str, Any]:
    return await retention.run_retention(
        ctx.db, ctx.blobs, ctx.settings, at, ctx.clock, dry_run=True
    )


async def _audit_checkpoint(ctx: JobContext, at: datetime) -> dict[str, Any]:
    security = ctx.settings.security
    # Only the rows since the last checkpoint: cheap enough to run every few minutes.
    count, heads = await audit_seal.verify_and_checkpoint(
        ctx.db, security.audit_key, security.audit_checkpoint, ctx.clock.now(), full=False
    )
    return {"checked": count, "head": max((head.id for head in heads.values()), default=0)}


async def _registrations(ctx: JobContext, at: datetime) -> dict[str, Any]:
    from qprserver.accounts import review

    settings = ctx.settings.registration
    async with ctx.db.session() as session:
        reminded = await review.remind_stuck(session, at, settings, ctx.notifier)
        purged = await review.purge_unconfirmed(session, at, settings)
    return {"reminded": reminded, "purged": purged}


async def _qb_reminders(ctx: JobContext, at: datetime) -> dict[str, Any]:
    from qprserver.qb import reminders

    qb = ctx.settings.qb
    async with ctx.db.session() as session:
        queued = await reminders.remind(session, at, qb, ctx.notifier)
        c1 = await reminders.remind_qs_stellen(session, at, qb, ctx.notifier)
    return {
        "years": reminders.reminder_years(qb, at),
        "reminded": queued,
        "c1_years": reminders.c1_reminder_years(qb, at),
        "qs_stellen_reminded": c1,
    }


async def _qb_confirmations(ctx: JobContext, at: datetime) -> dict[str, Any]:
    from qprserver.qb import confirmation

    qb = ctx.settings.qb
    async with ctx.db.session() as session:
        queued = await confirmation.confirm_registrations(session, at, qb, ctx.notifier)
    return {"years": confirmation.confirmation_years(qb, at), "confirmed": queued}


async def _sweep(ctx: JobContext, at: datetime) -> dict[str, Any]:
    # Partial uploads kept past their time go; the rest of those kept stay.
    expired = await partials.expire(ctx.db, at, ctx.settings.storage.partial_keep)
    for temp_name in expired:
        ctx.blobs.remove_temp(temp_name)
    kept = await partials.kept_temp_names(ctx.db)
    # An upload untouched for longer than a session may stay idle is abandoned.
    stale = ctx.settings.server.idle_timeout + 3600
    removed = ctx.blobs.sweep_temp(older_than_seconds=stale, now=time.time(), spare=kept)
    result: dict[str, Any] = {
        "temp_files_removed": removed,
        "partial_uploads_expired": len(expired),
    }
    # Web sessions past their time (the portal refuses them anyway) leave the table.
    ended = await websessions.expire(ctx.db, at, ctx.settings.web)
    if ended:
        result["web_sessions_ended"] = ended
    return result


def job_specs(settings: Settings) -> dict[str, JobSpec]:
    """Every job with its schedule and period function from the settings."""
    jobs = settings.jobs
    tz = ZoneInfo(jobs.timezone)
    specs = [
        JobSpec(
            "mail-digest",
            "Sammelmails über neue Dokumente",
            _digest,
            ("interval", settings.mail.digest_interval),
            every(settings.mail.digest_interval),
        ),
        JobSpec(
            "mail-send",
            "Versand der Mails aus dem Postausgang",
            _send,
            ("interval", jobs.send_interval),
            every(jobs.send_interval),
            claimed=False,
        ),
        JobSpec(
            "bundles",
            "Wochenpakete der vergangenen ISO-Woche",
            _bundles,
            ("cron", jobs.bundles),
            weekly(tz),
        ),
        JobSpec(
            "final-bundle",
            "Abschlusspaket nach der letzten Frist",
            _final,
            ("cron", jobs.bundles),
            # Once per report year, from the day after its replacement window.
            final_year(settings),
        ),
        JobSpec(
            "retention",
            "Löschfristen und Aufräumen der Ablage",
            _retention,
            ("cron", jobs.retention),
            daily(tz),
            dry_run=_retention_dry_run,
        ),
        JobSpec(
            "registrations",
            "Erinnerungen an hängende und Löschen unbestätigter Registrierungen",
            _registrations,
            ("cron", jobs.retention),
            daily(tz),
        ),
        JobSpec(
            "qb-reminders",
            "Erinnerungen vor den Fristen: Krankenhäuser ohne Bericht, QS-Stellen ohne C-1",
            _qb_reminders,
            ("cron", jobs.retention),
            daily(tz),
        ),
        JobSpec(
            "qb-confirmations",
            "Bestätigung der Berichtsregistrierungen mit den registrierten Daten "
            "nach der Korrekturphase",
            _qb_confirmations,
            ("cron", jobs.retention),
            daily(tz),
        ),
        JobSpec(
            "sweep",
            "Entfernen abgebrochener Uploads",
            _sweep,
            ("interval", jobs.sweep_interval),
            every(jobs.sweep_interval),
            claimed=False,
        ),
        JobSpec(
            "audit-checkpoint",
            "Prüfung der neuesten Audit-Einträge und Fortschreiben des Prüfpunkts",
            _audit_checkpoint,
            ("interval", jobs.checkpoint_interval),
            every(jobs.checkpoint_interval),
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
    period = spec.period(at)
    if dry_run:
        if spec.dry_run is None:
            offered = sorted(n for n, s in specs.items() if s.dry_run is not None)
            raise InvalidInput(
                f"job {name!r} offers no dry run; jobs with --dry-run: {', '.join(offered)}"
            )
        return RunOutcome(name, period, True, await spec.dry_run(ctx, at))
    began = time.monotonic()
    if not spec.claimed:
        started = ctx.clock.now()
        try:
            result = await spec.runner(ctx, at)
        except Exception as exc:
            failed = {"error": repr(exc)}
            events.job(name, period=period, result="failed", seconds=_since(began), detail=failed)
            await claims.record_unclaimed(
                ctx.db, name, period, started, ctx.clock.now(), failed, ok=False
            )
            raise
        events.job(name, period=period, result="ok", seconds=_since(began), detail=result)
        await claims.record_unclaimed(
            ctx.db, name, period, started, ctx.clock.now(), result, ok=True
        )
        return RunOutcome(name, period, True, result)
    lease = timedelta(seconds=ctx.settings.jobs.lease)
    if not await claims.claim(ctx.db, name, period, ctx.clock.now(), lease):
        skipped = {"skipped": "already done or running"}
        events.job(name, period=period, result="skipped", seconds=_since(began), detail=skipped)
        return RunOutcome(name, period, False, skipped)
    try:
        result = await spec.runner(ctx, at)
    except Exception as exc:
        failed = {"error": repr(exc)}
        events.job(name, period=period, result="failed", seconds=_since(began), detail=failed)
        await claims.finish(ctx.db, name, period, ctx.clock.now(), failed, ok=False)
        raise
    events.job(name, period=period, result="ok", seconds=_since(began), detail=result)
    await claims.finish(ctx.db, name, period, ctx.clock.now(), result, ok=True)
    return RunOutcome(name, period, True, result)


def _since(began: float) -> float:
    return time.monotonic() - began
