"""The operations listener on a free port, asked over a real TCP connection."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from qprserver.config import MetricsSettings
from qprserver.errors import StartupError
from qprserver.observability.health import Readiness
from qprserver.observability.listener import METRICS_TYPE, OpsListener

NOT_READY = Readiness(
    {"database": "ok", "storage": "storage: OSError: disk full", "scheduler": "ok"}
)


@pytest.fixture
async def listener() -> AsyncIterator[OpsListener]:
    async def metrics() -> bytes:
        return b"qpr_bans_active 0.0\n"

    async def ready() -> Readiness:
        return NOT_READY

    ops = OpsListener(MetricsSettings(enabled=True, port=0), metrics, ready)
    await ops.start()
    try:
        yield ops
    finally:
        await ops.stop()


async def _ask(ops: OpsListener, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", ops.port)
    writer.write(request)
    writer.write_eof()  # a cut-off request is answered at once, not after the read timeout
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


async def test_metrics_are_served_in_prometheus_text_format(listener: OpsListener) -> None:
    status, headers, body = await _ask(listener, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == METRICS_TYPE
    assert body == b"qpr_bans_active 0.0\n"


async def test_a_failing_check_makes_readyz_answer_503_with_what_failed(
    listener: OpsListener,
) -> None:
    status, _, body = await _ask(listener, b"GET /readyz HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert json.loads(body) == {"status": "not ready", "checks": NOT_READY.checks}


async def test_other_methods_paths_and_garbage_are_refused(listener: OpsListener) -> None:
    assert (await _ask(listener, b"POST /metrics HTTP/1.1\r\n\r\n"))[0].endswith(
        "405 Method Not Allowed"
    )
    assert (await _ask(listener, b"GET /../etc/passwd HTTP/1.1\r\n\r\n"))[0].endswith(
        "404 Not Found"
    )
    assert (await _ask(listener, b"\x00\x01 no request\n"))[0].endswith("400 Bad Request")


async def test_a_taken_port_stops_the_start_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ops = OpsListener(MetricsSettings(enabled=True, port=port), _never, _never)
        with pytest.raises(StartupError, match=rf"^\[metrics\] 127\.0\.0\.1:{port} kann nicht"):
            await ops.start()


async def _never() -> Any:
    raise AssertionError("not asked")
