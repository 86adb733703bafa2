"""``guarded``: unexpected exceptions of an SFTP request become a plain failure.

An SFTP error raised on purpose reaches the client as it is; anything else is
logged with its traceback and answered "Internal error", so no exception text of
the backend ever reaches a client. The policy is written once (``_Guard``); the
decorator only picks the wrapper for a plain, coroutine or async generator method.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import asyncssh

log = logging.getLogger("qprserver.sftp.session")

F = TypeVar("F", bound=Callable[..., Any])


class _Guard:
    """The translation, as a context manager made once per guarded method."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        # BaseExceptions (cancellation, GeneratorExit) and SFTP errors pass unchanged.
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, asyncssh.SFTPError):
            return False
        log.error("SFTP %s failed", self.name, exc_info=(kind, exc, tb))  # type: ignore[arg-type]
        raise asyncssh.SFTPFailure("Internal error") from None


def guarded(func: F) -> F:
    """Turn unexpected exceptions into a plain failure; internals never reach a client."""
    guard = _Guard(func.__name__)
    if inspect.isasyncgenfunction(func):

        async def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            with guard:
                async for item in func(*args, **kwargs):
                    yield item

        return cast(F, functools.wraps(func)(agen))
    if inspect.iscoroutinefunction(func):

        async def coro(*args: Any, **kwargs: Any) -> Any:
            with guard:
                return await func(*args, **kwargs)

        return cast(F, functools.wraps(func)(coro))

    def sync(*args: Any, **kwargs: Any) -> Any:
        with guard:
            return func(*args, **kwargs)

    return cast(F, functools.wraps(func)(sync))
