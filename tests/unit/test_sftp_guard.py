"""guarded: SFTP errors pass as they are, anything else becomes a plain failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncssh
import pytest

from qprserver.sftp.guard import guarded


@guarded
def plain(fail: Exception | None) -> str:
    if fail is not None:
        raise fail
    return "ok"


@guarded
async def coroutine(fail: Exception | None) -> str:
    if fail is not None:
        raise fail
    return "ok"


@guarded
async def listing(fail: Exception | None) -> AsyncIterator[str]:
    yield "first"
    if fail is not None:
        raise fail
    yield "second"


async def _all(fail: Exception | None) -> list[str]:
    return [item async for item in listing(fail)]


async def test_results_and_sftp_errors_pass_unchanged() -> None:
    assert plain(None) == "ok"
    assert await coroutine(None) == "ok"
    assert await _all(None) == ["first", "second"]
    denied = asyncssh.SFTPPermissionDenied("Permission denied")
    with pytest.raises(asyncssh.SFTPPermissionDenied):
        plain(denied)
    with pytest.raises(asyncssh.SFTPPermissionDenied):
        await coroutine(denied)
    with pytest.raises(asyncssh.SFTPPermissionDenied):
        await _all(denied)


async def test_other_exceptions_reach_the_client_as_internal_error_and_the_log_in_full(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = RuntimeError("/var/lib/qpr/blobs/ab/cd is gone")
    for call in (lambda: plain(secret), lambda: coroutine(secret), lambda: _all(secret)):
        caplog.clear()
        with caplog.at_level(logging.ERROR), pytest.raises(asyncssh.SFTPFailure) as failure:
            result = call()
            if asyncio.iscoroutine(result):
                await result
        assert failure.value.reason == "Internal error"
        assert failure.value.__suppress_context__
        assert caplog.records[0].exc_info is not None
        assert caplog.records[0].exc_info[1] is secret


async def test_cancellation_is_not_turned_into_a_failure() -> None:
    with pytest.raises(asyncio.CancelledError):
        await coroutine(asyncio.CancelledError())  # type: ignore[arg-type]
