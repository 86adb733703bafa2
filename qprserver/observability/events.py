"""What happened, told once: each function logs one event and updates its metrics.

The domain calls these at its seams (the functions both channels call), so the SFTP
edge and the web portal produce the same events; an edge only says which channel.
An event is a standard ``logging`` record on the ``qprserver.events`` logger whose
message is the event's name and whose fields (``logs.FIELDS``) have stable names:

========================  ==========================================================
event                     fields
========================  ==========================================================
connection.accepted       channel, address
connection.refused        channel, address, reason (banned, limit)
login.ok                  channel, method, account, address, session
login.failed              channel, method, account, address, reason, session
upload.accepted           account, name, kind, size, sha256, recipients, document,
                          version, elapsed_ms
upload.unchanged          account, name, kind, size, sha256, document, version,
                          elapsed_ms
upload.rejected           account, name, kind, size, sha256, reasons, elapsed_ms
download.complete         channel, account, document, delivery, sha256, bytes,
                          elapsed_ms
delivery.acknowledged     account, document, delivery, sha256
bundle.acknowledged       account, bundle, sha256
bundle.built              account, bundle, kind, period, documents, size, sha256
mail.sent / .failed /     message, template, account_id, attempts (, error)
mail.dead
job.run                   job, period, result (ok, failed, skipped), duration_ms,
                          detail
ban.set / ban.lifted      key (``addr:<ip>`` or ``account:<ik>``) (, until, seconds)
config.warning            problem
========================  ==========================================================

``session`` and ``request`` come from the context (``logs.bind``) on every line
logged inside a request. No event carries a secret, a code, a hash or document
content: the fields above are all there is.

The metrics are this process's ``Metrics``, set once by the composition root
(``use``), like the handlers of ``logging``: passing them through every domain
signature would add a parameter to each function both channels call, for an
instrument that belongs to the process, not to the call. Without ``use`` (the CLI,
unit tests) events are logged and nothing is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from qprserver.observability.logs import FIELDS

if TYPE_CHECKING:
    from qprserver.observability.metrics import Metrics

log = logging.getLogger("qprserver.events")

_metrics: Metrics | None = None


def use(metrics: Metrics | None) -> None:
    """Count into ``metrics`` from now on (None: count nothing)."""
    global _metrics
    _metrics = metrics


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields."""
    if log.isEnabledFor(level):
        log.log(level, event, extra={FIELDS: fields})


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


# -- connections and logins ---------------------------------------------------


def connection(channel: str, address: str, refused: str | None = None) -> None:
    """A connection came in: accepted, or refused (``banned``, ``limit``)."""
    if refused is None:
        emit("connection.accepted", logging.DEBUG, channel=channel, address=address)
    else:
        emit("connection.refused", channel=channel, address=address, reason=refused)


def login(
    channel: str,
    method: str,
    *,
    account: str | None,
    address: str,
    reason: str | None = None,
    session: str | None = None,
) -> None:
    """A login ended: ``reason`` None for success, else its category (never the secret)."""
    result = "ok" if reason is None else "failed"
    fields: dict[str, Any] = {"channel": channel, "method": method, "account": account}
    fields["address"] = address
    if reason is not None:
        fields["reason"] = reason
    if session is not None:
        fields["session"] = session
    # INFO either way: failed logins are the daily noise of a public port; what an
    # operator must act on is a ban (``ban.set``, WARNING).
    emit(f"login.{result}", **fields)
    if _metrics is not None:
        _metrics.logins.labels(channel, method, result).inc()


def session_opened(channel: str) -> None:
    if _metrics is not None:
        _metrics.sessions_active.labels(channel).inc()


def session_closed(channel: str) -> None:
    if _metrics is not None:
        _metrics.sessions_active.labels(channel).dec()


# -- documents ------------------------------------------------------------------


def upload(
    result: str,
    *,
    account: str,
    name: str,
    kind: str,
    size: int,
    sha256: str,
    seconds: float,
    recipients: Iterable[str] = (),
    document: int | None = None,
    version: int | None = None,
    reasons: Iterable[str] = (),
) -> None:
    """An upload was accepted, rejected, or repeated unchanged."""
    fields: dict[str, Any] = {"account": account, "name": name, "kind": kind}
    fields.update(size=size, sha256=sha256)
    if result == "rejected":
        fields["reasons"] = list(reasons)
    else:
        if result == "accepted":
            fields["recipients"] = list(recipients)
        fields.update(document=document, version=version)
    fields["elapsed_ms"] = _ms(seconds)
    emit(f"upload.{result}", **fields)
    if _metrics is not None:
        _metrics.uploads.labels(kind, result).inc()
        if result == "accepted":
            _metrics.upload_bytes.inc(size)
            _metrics.transfer_seconds.labels("upload").observe(seconds)


def download(
    channel: str,
    *,
    account: str,
    document: str,
    delivery: int,
    sha256: str,
    size: int,
    seconds: float,
    context: Mapping[str, Any] | None = None,
) -> None:
    """A delivery was downloaded completely (a receipt was written); ``context``: the
    log ids of the request that ended it."""
    emit(
        "download.complete",
        **(context or {}),
        channel=channel,
        account=account,
        document=document,
        delivery=delivery,
        sha256=sha256,
        bytes=size,
        elapsed_ms=_ms(seconds),
    )
    if _metrics is not None:
        _metrics.downloads.labels(channel).inc()
        _metrics.download_bytes.labels(channel).inc(size)
        _metrics.transfer_seconds.labels("download").observe(seconds)


def acknowledged(account: str, *, document: str, delivery: int, sha256: str) -> None:
    emit(
        "delivery.acknowledged",
        account=account,
        document=document,
        delivery=delivery,
        sha256=sha256,
    )


def bundle_acknowledged(account: str, *, bundle: str, sha256: str) -> None:
    emit("bundle.acknowledged", account=account, bundle=bundle, sha256=sha256)


def bundle_built(
    account: str, *, bundle: str, kind: str, period: str, documents: int, size: int, sha256: str
) -> None:
    emit(
        "bundle.built",
        account=account,
        bundle=bundle,
        kind=kind,
        period=period,
        documents=documents,
        size=size,
        sha256=sha256,
    )


# -- mail, jobs, bans, configuration ----------------------------------------------


def mail(
    result: str,
    *,
    message: int,
    template: str,
    account_id: int | None,
    attempts: int,
    error: str | None = None,
) -> None:
    """A mail was handed to the relay (``sent``), or failed (``failed``, ``dead``)."""
    fields: dict[str, Any] = {"message": message, "template": template}
    fields.update(account_id=account_id, attempts=attempts)
    if error is not None:
        fields["error"] = error
    level = {"sent": logging.INFO, "failed": logging.WARNING}.get(result, logging.ERROR)
    emit(f"mail.{result}", level, **fields)
    if _metrics is not None:
        _metrics.mail_sent.labels(result).inc()


def job(name: str, *, period: str, result: str, seconds: float, detail: object) -> None:
    """A job run ended: ``ok``, ``failed`` or ``skipped`` (its period was done)."""
    level = logging.ERROR if result == "failed" else logging.INFO
    emit(
        "job.run",
        level,
        job=name,
        period=period,
        result=result,
        duration_ms=_ms(seconds),
        detail=detail,
    )
    if _metrics is not None:
        _metrics.job_runs.labels(name, result).inc()
        if result != "skipped":
            _metrics.job_duration.labels(name).observe(seconds)


def ban_set(key: str, until: datetime, seconds: int) -> None:
    emit("ban.set", logging.WARNING, key=key, until=until.isoformat(), seconds=seconds)


def ban_lifted(key: str) -> None:
    emit("ban.lifted", key=key)


def config_warning(problem: str) -> None:
    emit("config.warning", logging.WARNING, problem=problem)
