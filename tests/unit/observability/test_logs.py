"""The log renderer: events and library records as one JSON or text line each."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from qprserver.config import LoggingSettings, ServiceEnvironment
from qprserver.observability import events, logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in logs.QUIET_LIBRARIES}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_an_event_is_one_json_line_with_its_fields_and_the_request_ids(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.setup(LoggingSettings(format="json"), ServiceEnvironment(), out)
    tokens = logs.bind(session="s1", request="r1")
    try:
        events.acknowledged("260326822", document="a.pdf", delivery=7, sha256="ab" * 32)
    finally:
        logs.unbind(tokens)
    events.ban_lifted("addr:192.0.2.1")
    first, second = _lines(out)
    assert first["event"] == "delivery.acknowledged"
    assert first["level"] == "info"
    assert first["logger"] == "qprserver.events"
    assert (first["session"], first["request"]) == ("s1", "r1")
    assert (first["account"], first["document"], first["delivery"]) == ("260326822", "a.pdf", 7)
    assert "timestamp" in first
    assert second["event"] == "ban.lifted"
    assert "session" not in second and "request" not in second


def test_library_records_take_the_same_format_and_only_warnings_come_through(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.setup(LoggingSettings(format="json"), ServiceEnvironment(), out)
    logging.getLogger("asyncssh").info("channel chatter")
    logging.getLogger("sqlalchemy.engine").info("SELECT 1")
    logging.getLogger("asyncssh").warning("odd client %s", "x")
    (line,) = _lines(out)
    assert line["event"] == "odd client x"
    assert (line["level"], line["logger"]) == ("warning", "asyncssh")


def test_text_format_is_one_readable_line_per_event(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup(LoggingSettings(format="text"), ServiceEnvironment(), out)
    events.config_warning("schema 2024 missing")
    (line,) = out.getvalue().splitlines()
    assert "config.warning" in line
    assert "problem='schema 2024 missing'" in line or "problem=schema 2024 missing" in line
    with pytest.raises(ValueError):
        json.loads(line)


def test_auto_format_is_json_when_the_stream_is_no_terminal() -> None:
    assert logs.json_wanted(LoggingSettings(format="auto"), io.StringIO())
    assert not logs.json_wanted(LoggingSettings(format="text"), io.StringIO())


def test_under_journald_lines_carry_no_timestamp_of_their_own(
    restore_logging: None, tmp_path: os.PathLike[str]
) -> None:
    path = os.path.join(tmp_path, "journal")
    with open(path, "w+", encoding="utf-8") as stream:
        stat = os.fstat(stream.fileno())
        journal = ServiceEnvironment(journal_stream=f"{stat.st_dev}:{stat.st_ino}")
        logs.setup(LoggingSettings(format="json"), journal, stream)
        events.ban_lifted("addr:192.0.2.1")
        stream.flush()
        stream.seek(0)
        line = json.loads(stream.readline())
    assert line["event"] == "ban.lifted"
    assert "timestamp" not in line


def test_a_journal_stream_naming_another_file_keeps_the_timestamps(
    restore_logging: None,
) -> None:
    out = io.StringIO()
    logs.setup(LoggingSettings(format="json"), ServiceEnvironment(journal_stream="1:2"), out)
    events.ban_lifted("addr:192.0.2.1")
    assert "timestamp" in _lines(out)[0]
