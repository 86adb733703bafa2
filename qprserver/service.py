"""Running the server: wiring the parts, signals, and worker processes.

This is the composition root of ``serve``: each server process builds its parts once
here (the database, the blob store, the mail ``Notifier``, the upload service, the
job context) and passes them in; nothing below builds its own. The first process
also speaks for the node: the operations listener (``[metrics]``) and systemd's
notifications (``observability``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from qprserver import __version__
from qprserver.audit import seal as audit_seal
from qprserver.clock import Clock, SystemClock
from qprserver.config import (
    ServiceEnvironment,
    Settings,
    load_config,
    s3_credentials,
    service_environment,
)
from qprserver.db.engine import Database
from qprserver.db.migrate import require_head
from qprserver.exchange import partials, retention
from qprserver.exchange.uploads import UploadService
from qprserver.jobs.registry import JobContext
from qprserver.jobs.scheduler import JobScheduler
from qprserver.notify.outbox import Notifier
from qprserver.notify.smtp import SmtpMailer
from qprserver.observability import events, health, logs, multiproc
from qprserver.observability.listener import OpsListener
from qprserver.observability.systemd import ServiceManager
from qprserver.sftp.receipts import ReceiptRecorder
from qprserver.sftp.server import SFTPListener
from qprserver.sftp.spread import Dispatcher, Receiver, Spread, socket_pair
from qprserver.sftp.state import ServerContext
from qprserver.sockets import listening_sockets
from qprserver.storage.base import BlobStore
from qprserver.storage.local import FileBlobStore
from qprserver.web.context import Portal
from qprserver.web.server import WebListener

log = logging.getLogger("qprserver")


def blob_store(settings: Settings, backend: str | None = None) -> BlobStore:
    """The blob store of this node: blobs under the data folder or in the S3 bucket
    (``storage.backend``, or backend if given), its own spool under the data folder.
    The caller closes it."""
    storage = settings.storage
    if (backend or storage.backend) == "s3":
        from qprserver.storage.s3 import S3BlobStore
        from qprserver.storage.s3client import S3Location

        credentials = s3_credentials(storage)
        location = S3Location(
            endpoint=storage.endpoint,
            region=storage.region,
            bucket=storage.bucket,
            prefix=storage.prefix,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
        )
        return S3BlobStore(storage.data_dir, location, settings.server.node_id)
    return FileBlobStore(storage.data_dir, settings.server.node_id)


def build_context(
    settings: Settings, db: Database, notifier: Notifier, clock: Clock | None = None
) -> ServerContext:
    """The parts a server process needs, wired together."""
    blobs = blob_store(settings)
    return ServerContext(
        settings=settings,
        db=db,
        blobs=blobs,
        uploads=UploadService(db, settings, notifier),
        receipts=ReceiptRecorder(db),
        clock=clock or SystemClock(),
    )


def job_context(
    settings: Settings, db: Database, notifier: Notifier, blobs: BlobStore | None = None
) -> JobContext:
    """The inputs of the jobs, wired for this settings and database."""
    return JobContext(
        db=db,
        settings=settings,
        blobs=blobs or blob_store(settings),
        notifier=notifier,
        mailer=SmtpMailer(settings.mail),
    )


async def sweep_stale_uploads(settings: Settings) -> int:
    """Remove this node's spool files of uploads that never completed (what a killed
    run of this node left); other nodes' spools, with their uploads in progress, are
    not touched.

    Partial uploads kept for their depositors to resume stay (``partials``).
    """
    db = Database(settings.database)
    try:
        await require_head(db)
        kept = await partials.kept_temp_names(db)
    finally:
        await db.dispose()
    blobs = blob_store(settings)
    try:
        return blobs.sweep_temp(older_than_seconds=0, now=time.time(), spare=kept)
    finally:
        blobs.close()


async def serve_forever(
    settings: Settings,
    *,
    sockets: Sequence[socket.socket] = (),
    spread: Spread | None = None,
    web_sockets: Sequence[socket.socket] | None = None,
    sweep_blobs: bool = False,
    ready: Callable[[int], None] | None = None,
    on_signal: Callable[[int], None] | None = None,
    primary: bool = False,
    metrics_folder: Path | None = None,
) -> None:
    """Run one server process until SIGTERM or SIGINT, then shut down gracefully.

    ``sweep_blobs``: first remove blobs no row refers to (left by a killed server
    between storing a blob and committing its row; one process of a node does it).
    ``on_signal`` is called with the signal first (the first process passes it on
    to the other workers, so all of them shut down at once). ``spread``: where this
    process's SFTP connections come from with workers (instead of ``sockets``,
    ``sftp/spread.py``). ``web_sockets``: the
    portal's, when ``web.enabled`` (None: bound here). ``primary``: this process serves
    the operations listener and tells systemd how the service stands;
    ``metrics_folder``: where the workers' metric values meet (``multiproc``).
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
    db = Database(settings.database, audit_key=audit_seal.load_key(settings.security.audit_key))
    manager = ServiceManager(service_environment() if primary else _NO_SERVICE_MANAGER)
    ops: OpsListener | None = None
    watchdog: asyncio.Task[None] | None = None
    try:
        await require_head(db)
        exposition = None
        if settings.metrics.enabled:
            # Imported only now: after ``multiproc.prepare`` in ``run`` (see there).
            from qprserver.observability import metrics

            exposition = metrics.build(__version__, metrics_folder)
            events.use(exposition.metrics)
        # The one notifier of this process: uploads and jobs queue their mails with it.
        notifier = Notifier(settings.mail)
        ctx = build_context(settings, db, notifier)
        if sweep_blobs:
            # Before listening: what a killed server left is gone before the first
            # upload, and the grace period keeps other nodes' fresh blobs safe.
            gone = await retention.sweep_blobs(
                db, ctx.blobs, ctx.clock, settings.storage.orphan_grace, delete=True
            )
            if gone:
                log.info("removed %d stored file(s) no document or bundle refers to", len(gone))
        listener = SFTPListener(ctx)
        await listener.start(sockets, spread)
        log.info("listening on %s:%d", settings.server.host, listener.port)
        web: WebListener | None = None
        if settings.web.enabled:
            if web_sockets is None:
                web_sockets = listening_sockets(settings.web.host, settings.web.port)[0]
            portal = Portal(settings, db, ctx.blobs, ctx.uploads, ctx.clock, totp_key=ctx.totp_key)
            web = WebListener(portal)
            await web.start(web_sockets)
        # Everything made so far (modules, tables, compiled statements) lives as long
        # as the process: out of the collector's sight, a full collection scans only
        # what sessions made since, not the whole heap of the libraries.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready(listener.port)
        scheduler = JobScheduler(job_context(settings, db, notifier, ctx.blobs))
        if primary and exposition is not None:
            gauges, render = exposition.gauges, exposition.render

            async def scrape() -> bytes:
                await gauges.refresh(db, ctx.clock.now())
                return render()

            async def readiness() -> health.Readiness:
                return await health.readiness(db, ctx.blobs, lambda: scheduler.running)

            ops = OpsListener(settings.metrics, scrape, readiness)
            await ops.start()
            log.info("operations listener on %s:%d", settings.metrics.host, ops.port)
        # SSH listens (and the operations listener) and the database answered.
        manager.notify(ready=1, status=f"listening on port {listener.port}")
        if manager.enabled:
            watchdog = asyncio.create_task(
                manager.watchdog(lambda: health.status_line(db, ctx.clock.now())),
                name="watchdog",
            )
        # Catch-up of missed runs may take a while (a bundle); it runs beside serving.
        starting = asyncio.create_task(scheduler.start(), name="scheduler-start")
        await stop.wait()
        manager.notify(stopping=1)
        log.info("shutting down (grace %.0fs)", settings.server.shutdown_grace)
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        scheduler.stop()
        if web is not None:
            await web.stop()
        await listener.stop()
        await asyncio.to_thread(ctx.blobs.close)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if ops is not None:
            await ops.stop()
        events.use(None)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await db.dispose()


def warn_unusable_files(settings: Settings) -> None:
    """One warning per configured Qb-R schema or rules file that cannot be used, at
    start, rather than first when a hospital's report meets it."""
    from qprserver.qb.engine import configuration_problems

    for problem in configuration_problems(settings.qb):
        events.config_warning(problem)


# Workers leave the service manager to the first process (systemd's NotifyAccess=main).
_NO_SERVICE_MANAGER = ServiceEnvironment()


def _worker(
    config_path: str,
    pair: socket.socket,
    port: int,
    web_sockets: list[socket.socket],
    metrics_folder: Path | None,
) -> None:
    settings = load_config(config_path)
    logs.setup(settings.logging, service_environment())
    asyncio.run(
        serve_forever(
            settings,
            spread=Receiver(pair, port),
            web_sockets=web_sockets,
            metrics_folder=metrics_folder,
        )
    )


def run(settings: Settings) -> None:
    """The ``serve`` command: one process, or ``workers`` processes sharing the port.

    The port is bound here, before anything else happens (a second ``serve`` on a
    taken port stops with one line and sweeps nothing of the running one's uploads).
    With workers, this process is the first of them (no idle supervisor holding
    memory): it starts the others, serves beside them, passes SIGTERM and SIGINT on
    and waits for them before it exits. It alone accepts SFTP connections and hands
    each to the process with the fewest (``sftp/spread.py``); each process serves its
    own socket of the portal's port (``listening_sockets``).
    """
    logs.setup(settings.logging, service_environment())
    workers = settings.server.workers
    sockets = listening_sockets(settings.server.host, settings.server.port)[0]
    web = settings.web
    web_sockets = listening_sockets(web.host, web.port, workers) if web.enabled else [[]] * workers
    warn_unusable_files(settings)
    swept = asyncio.run(sweep_stale_uploads(settings))
    if swept:
        log.info("removed %d unfinished upload(s) left from before", swept)
    if workers == 1:
        asyncio.run(
            serve_forever(
                settings,
                sockets=sockets,
                web_sockets=web_sockets[0],
                sweep_blobs=True,
                primary=True,
            )
        )
        return
    # Before any process imports prometheus-client: the workers count into this folder.
    folder = multiproc.prepare() if settings.metrics.enabled else None
    try:
        _run_workers(settings, sockets, web_sockets, folder)
    finally:
        if folder is not None:
            multiproc.remove(folder)


def _run_workers(
    settings: Settings,
    sockets: list[socket.socket],
    web_sockets: list[list[socket.socket]],
    folder: Path | None,
) -> None:
    assert settings.config_path is not None
    ctx = multiprocessing.get_context("spawn")
    port = sockets[0].getsockname()[1]
    pairs = [socket_pair() for _ in web_sockets[1:]]
    procs = [
        ctx.Process(
            target=_worker,
            args=(str(settings.config_path), theirs, port, web_own, folder),
            name=f"qprserver-{i}",
        )
        for i, ((_, theirs), web_own) in enumerate(zip(pairs, web_sockets[1:], strict=True), 1)
    ]
    for proc, (_, theirs), web_own in zip(procs, pairs, web_sockets[1:], strict=True):
        proc.start()  # the child has its copies of the sockets once this returns
        for sock in [theirs, *web_own]:
            # Else a worker's socket outlives the worker: its share of the portal's
            # connections would wait in a queue nobody accepts from, and its death
            # would not end the pair (``Dispatcher`` would go on handing to it).
            sock.close()

    def forward(_signum: int) -> None:
        # SIGINT too becomes a graceful SIGTERM for the others.
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                proc.terminate()

    try:
        asyncio.run(
            serve_forever(
                settings,
                spread=Dispatcher(sockets, [ours for ours, _ in pairs]),
                web_sockets=web_sockets[0],
                sweep_blobs=True,
                on_signal=forward,
                primary=True,
                metrics_folder=folder,
            )
        )
    finally:
        forward(signal.SIGTERM)  # also when this process failed: the others stop too
        for proc in procs:
            proc.join()
