"""Running the server: wiring the parts, signals, and worker processes."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable

from qprserver import partials
from qprserver.blobstore import FileBlobStore
from qprserver.clock import Clock, SystemClock
from qprserver.config import Settings, load_config
from qprserver.db.engine import Database
from qprserver.db.migrate import require_head
from qprserver.jobs.registry import JobContext
from qprserver.jobs.scheduler import JobScheduler
from qprserver.notify import SmtpMailer
from qprserver.sftp.receipts import ReceiptRecorder
from qprserver.sftp.server import SFTPListener
from qprserver.sftp.state import ServerContext
from qprserver.uploads import UploadService

log = logging.getLogger("qprserver")


def build_context(settings: Settings, db: Database, clock: Clock | None = None) -> ServerContext:
    """The parts a server process needs, wired together."""
    blobs = FileBlobStore(settings.storage.data_dir)
    return ServerContext(
        settings=settings,
        db=db,
        blobs=blobs,
        uploads=UploadService(db, settings),
        receipts=ReceiptRecorder(db),
        clock=clock or SystemClock(),
    )


def job_context(settings: Settings, db: Database, blobs: FileBlobStore | None = None) -> JobContext:
    """The inputs of the jobs, wired for this settings and database."""
    return JobContext(
        db=db,
        settings=settings,
        blobs=blobs or FileBlobStore(settings.storage.data_dir),
        mailer=SmtpMailer(settings.mail),
    )


async def sweep_stale_uploads(settings: Settings) -> int:
    """Remove temp files of uploads that never completed (a killed server's leftovers).

    Partial uploads kept for their depositors to resume stay (``partials``).
    """
    db = Database(settings.database)
    try:
        await require_head(db)
        kept = await partials.kept_temp_names(db)
    finally:
        await db.dispose()
    return FileBlobStore(settings.storage.data_dir).sweep_temp(
        older_than_seconds=0, now=time.time(), spare=kept
    )


async def serve_forever(
    settings: Settings,
    *,
    reuse_port: bool = False,
    ready: Callable[[int], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
) -> None:
    """Run one server process until SIGTERM or SIGINT, then shut down gracefully.

    ``on_signal`` is called with the signal first (the first process passes it on
    to the other workers, so all of them shut down at once).
    """
    # Signals first: a SIGTERM during start-up must still shut down in order.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled(sig: int) -> None:
        if on_signal is not None:
            on_signal(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled, sig)
    db = Database(settings.database)
    try:
        await require_head(db)
        ctx = build_context(settings, db)
        listener = SFTPListener(ctx)
        await listener.start(reuse_port=reuse_port)
        log.info("listening on %s:%d", settings.server.host, listener.port)
        # Everything made so far (modules, tables, compiled statements) lives as long
        # as the process: out of the collector's sight, a full collection scans only
        # what sessions made since, not the whole heap of the libraries.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready(listener.port)
        scheduler = JobScheduler(job_context(settings, db, ctx.blobs))
        # Catch-up of missed runs may take a while (a bundle); it runs beside serving.
        starting = asyncio.create_task(scheduler.start(), name="scheduler-start")
        await stop.wait()
        log.info("shutting down (grace %.0fs)", settings.server.shutdown_grace)
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        scheduler.stop()
        await listener.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await db.dispose()


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    # asyncssh logs every channel at INFO; operators want qprserver's events.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _worker(config_path: str) -> None:
    _setup_logging()
    asyncio.run(serve_forever(load_config(config_path), reuse_port=True))


def run(settings: Settings) -> None:
    """The ``serve`` command: one process, or ``workers`` processes sharing the port.

    With workers, this process is the first of them (no idle supervisor holding
    memory): it starts the others, serves beside them, passes SIGTERM and SIGINT on
    and waits for them before it exits.
    """
    _setup_logging()
    swept = asyncio.run(sweep_stale_uploads(settings))
    if swept:
        log.info("removed %d unfinished upload(s) left from before", swept)
    workers = settings.server.workers
    if workers == 1:
        asyncio.run(serve_forever(settings))
        return
    if settings.server.port == 0:
        raise SystemExit("workers > 1 needs a fixed port")
    assert settings.config_path is not None
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(str(settings.config_path),), name=f"qprserver-{i}")
        for i in range(1, workers)
    ]
    for proc in procs:
        proc.start()

    def forward(_signum: int) -> None:
        # SIGINT too becomes a graceful SIGTERM for the others.
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                proc.terminate()

    try:
        asyncio.run(serve_forever(settings, reuse_port=True, on_signal=forward))
    finally:
        forward(signal.SIGTERM)  # also when this process failed: the others stop too
        for proc in procs:
            proc.join()
