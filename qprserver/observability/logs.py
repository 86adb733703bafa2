"""The log of ``serve``: one renderer (structlog) for every record of the process.

The domain logs through the standard ``logging`` module; an event (``events.py``)
is a record whose message is the event's name and whose fields ride along under
``FIELDS``. structlog's ``ProcessorFormatter`` renders every record the same way,
ours and the libraries' (asyncssh, SQLAlchemy, uvicorn, APScheduler), as JSON lines
for a collector or as text for a terminal. Why structlog over stdlib: the libraries
log through stdlib and cannot be changed, and structlog renders their records and
ours with one processor chain, without our modules depending on it. The
``session`` and ``request`` ids live in one ``ContextVar`` (``bind``), so every line
logged while serving a request carries them.

Under journald (``JOURNAL_STREAM`` names stderr) lines carry no timestamp: the
journal stamps each line itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import sys
from contextvars import ContextVar, Token
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor

from qprserver.config import LoggingSettings, ServiceEnvironment

# The attribute of a LogRecord that carries an event's fields (``events.emit``).
FIELDS = "qpr_fields"

# Libraries whose INFO records are per-connection or per-statement chatter: an
# operator wants their warnings, and qprserver's own events for what happened.
QUIET_LIBRARIES = (
    "asyncssh",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "apscheduler",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Ids are this process's random prefix and a counter: unique across the workers and
# nodes writing one log, and cheap enough for every SFTP request that may tell an event.
_PREFIX = secrets.token_hex(3)
_COUNTER = itertools.count(1)


def new_id() -> str:
    """A short id for a session or a request, unique within a log."""
    return f"{_PREFIX}{next(_COUNTER):06x}"


# The ids of what is being served: one variable holding both, so a request binds
# and unbinds them with one call each (every SFTP request but read and write does).
_IDS: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("qpr_log_ids", default=())


def current_ids() -> tuple[tuple[str, str], ...]:
    """The ids bound now, to tell an event later outside the request (``receipts``)."""
    return _IDS.get()


def bind(**ids: str) -> Token[tuple[tuple[str, str], ...]]:
    """Bind ids (``session``, ``request``) until ``unbind`` with the token returned."""
    return _IDS.set(tuple(ids.items()))


def unbind(token: Token[tuple[tuple[str, str], ...]]) -> None:
    _IDS.reset(token)


def _merge_ids(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    for key, value in _IDS.get():
        event_dict.setdefault(key, value)
    return event_dict


def _event_fields(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Lift an event's fields from its LogRecord into the rendered line."""
    record = event_dict.get("_record")
    fields = getattr(record, FIELDS, None)
    if fields:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return event_dict


# Read first in every line, in this order; an event's own fields follow.
_LEADING = ("timestamp", "level", "logger", "event", "session", "request")


def _leading_fields_first(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _LEADING if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _under_journald(journal_stream: str, stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd named (device:inode)."""
    if not journal_stream:
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return journal_stream == f"{stat.st_dev}:{stat.st_ino}"


def json_wanted(settings: LoggingSettings, stream: TextIO) -> bool:
    """JSON unless configured as text, or "auto" on a terminal."""
    if settings.format == "auto":
        return not stream.isatty()
    return settings.format == "json"


def formatter(*, json: bool, timestamps: bool) -> logging.Formatter:
    """The one formatter of the process's records."""
    chain: list[Processor] = [
        _merge_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _event_fields,
    ]
    if timestamps:
        chain.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
    chain.append(_leading_fields_first)
    renderer: Processor
    if json:
        chain.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=False, default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def setup(
    settings: LoggingSettings, environment: ServiceEnvironment, stream: TextIO | None = None
) -> None:
    """Send every record of the process to ``stream`` (stderr) in the configured format."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        formatter(
            json=json_wanted(settings, stream),
            timestamps=not _under_journald(environment.journal_stream, stream),
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    level = _LEVELS[settings.level]
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
