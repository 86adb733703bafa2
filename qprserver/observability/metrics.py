"""The Prometheus metrics of a server process (prometheus-client).

Counters, histograms and the session gauge are updated where things happen
(``events.py``); what the database knows (mails by status, active bans, stored
bytes) is read when ``/metrics`` is scraped (``DatabaseGauges``).

Several worker processes (``server.workers``) use prometheus-client's multiprocess
mode: ``serve`` makes a folder for the run (``multiproc``) before any process
imports this module (the client picks its value store at import), each process
writes its values there, and the one process that serves ``/metrics`` sums them. So
this module is imported only by the composition root; the domain reaches the
metrics through ``events``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from qprserver.db.engine import Database, Reads
from qprserver.db.models import MAIL_STATUSES, AuthScore, Bundle, Document, MailMessage

# Seconds: a 20 kB PDF over loopback to a 500 MB bundle over a slow line.
TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800)
JOB_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 30, 120, 600, 3600)


class Metrics:
    """The instruments one process updates."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        # ``registry``: where single-process values are collected; None in
        # multiprocess mode, where the files of all processes are collected instead.
        r = registry
        self.sessions_active = Gauge(
            "qpr_sessions_active",
            "Logged-in sessions open now.",
            ["channel"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.logins = Counter(
            "qpr_logins_total",
            "Logins by channel, first-factor method and result (ok, failed).",
            ["channel", "method", "result"],
            registry=r,
        )
        self.uploads = Counter(
            "qpr_uploads_total",
            "Completed uploads by document kind and result (accepted, rejected, unchanged).",
            ["kind", "result"],
            registry=r,
        )
        self.upload_bytes = Counter(
            "qpr_upload_bytes_total", "Bytes of accepted uploads.", registry=r
        )
        self.downloads = Counter(
            "qpr_downloads_total", "Complete downloads of deliveries.", ["channel"], registry=r
        )
        self.download_bytes = Counter(
            "qpr_download_bytes_total",
            "Bytes of complete downloads of deliveries.",
            ["channel"],
            registry=r,
        )
        self.transfer_seconds = Histogram(
            "qpr_transfer_seconds",
            "Seconds from opening a file to its completed upload or download.",
            ["direction"],
            buckets=TRANSFER_BUCKETS,
            registry=r,
        )
        self.mail_sent = Counter(
            "qpr_mail_sent_total",
            "Attempts to hand a mail to the relay, by result (sent, failed, dead).",
            ["result"],
            registry=r,
        )
        self.job_runs = Counter(
            "qpr_job_runs_total",
            "Job runs by job and result (ok, failed, skipped).",
            ["job", "result"],
            registry=r,
        )
        self.job_duration = Histogram(
            "qpr_job_duration_seconds",
            "Seconds a job run took.",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge(
            "qpr_build_info",
            "The running version (always 1).",
            ["version"],
            registry=r,
            multiprocess_mode="livemax",
        )


@dataclass(eq=False)  # a registry keys its collectors by identity
class DatabaseGauges(Collector):
    """What the database knows, read when ``/metrics`` is scraped (``refresh``)."""

    outbox: dict[str, int] = field(default_factory=dict)
    bans: int = 0
    storage_bytes: int = 0

    async def refresh(self, db: Database, now: datetime) -> None:
        async def work(reads: Reads) -> tuple[dict[str, int], int, int]:
            by_status = dict(
                (
                    await reads.execute(
                        select(MailMessage.status, func.count(MailMessage.id)).group_by(
                            MailMessage.status
                        )
                    )
                )
                .tuples()
                .all()
            )
            bans = await reads.scalar(
                select(func.count(AuthScore.key)).where(AuthScore.banned_until > now)
            )
            documents = await reads.scalar(select(func.coalesce(func.sum(Document.size), 0)))
            bundles = await reads.scalar(select(func.coalesce(func.sum(Bundle.size), 0)))
            return by_status, int(bans or 0), int(documents or 0) + int(bundles or 0)

        outbox, self.bans, self.storage_bytes = await db.quick_read(work)
        self.outbox = {status: int(outbox.get(status, 0)) for status in MAIL_STATUSES}

    def collect(self) -> Iterable[Metric]:
        mails = GaugeMetricFamily(
            "qpr_outbox_messages", "Mails in the outbox by status.", labels=["status"]
        )
        for status, count in sorted(self.outbox.items()):
            mails.add_metric([status], count)
        yield mails
        yield GaugeMetricFamily("qpr_bans_active", "Addresses and accounts banned now.", self.bans)
        yield GaugeMetricFamily(
            "qpr_storage_bytes",
            "Bytes of stored documents (every version) and bundles.",
            self.storage_bytes,
        )


@dataclass
class Exposition:
    """The metrics one listener serves: this process's, or every worker's summed."""

    metrics: Metrics
    registry: CollectorRegistry
    gauges: DatabaseGauges

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build(version: str, folder: Path | None = None) -> Exposition:
    """The instruments of this process and the registry ``/metrics`` renders;
    ``folder``: the run's folder of ``prepare_multiprocess`` (several processes)."""
    # No ``*_created`` series beside every counter: they double the scrape for nothing
    # an alert or a rate needs.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    gauges = DatabaseGauges()
    if folder is None:
        registry = CollectorRegistry()
        metrics = Metrics(registry)
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(folder))  # type: ignore[no-untyped-call]
        metrics = Metrics(None)
    registry.register(gauges)
    metrics.build_info.labels(version).set(1)
    return Exposition(metrics, registry, gauges)
