"""``guarded``: unexpected exceptions of an SFTP request become a plain failure.

An SFTP error raised on purpose reaches the client as it is; anything else is
logged with its traceback and answered "Internal error", so no exception text of
the backend ever reaches a client. The policy is written once (``_internal_error``);
the decorator only picks the wrapper for a plain, coroutine or async generator
method. The wrappers use ``try`` rather than a context manager: a ``try`` costs
nothing until something is raised, a ``with`` two calls per request.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import asyncssh

log = logging.getLogger("qprserver.sftp.session")

F = TypeVar("F", bound=Callable[..., Any])


def _internal_error(name: str, exc: Exception) -> asyncssh.SFTPFailure:
    """Log what went wrong in request ``name``; the plain failure the client gets."""
    log.error("SFTP %s failed", name, exc_info=exc)
    return asyncssh.SFTPFailure("Internal error")


def guarded(func: F) -> F:
    """Turn unexpected exceptions into a plain failure; internals never reach a client."""
    name = func.__name__
    if inspect.isasyncgenfunction(func):

        async def agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            try:
                async for item in func(*args, **kwargs):
                    yield item
            except asyncssh.SFTPError:
                raise
            except Exception as exc:
                raise _internal_error(name, exc) from None

        return cast(F, functools.wraps(func)(agen))
    if inspect.iscoroutinefunction(func):

        async def coro(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except asyncssh.SFTPError:
                raise
            except Exception as exc:
                raise _internal_error(name, exc) from None

        return cast(F, functools.wraps(func)(coro))

    def sync(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except asyncssh.SFTPError:
            raise
        except Exception as exc:
            raise _internal_error(name, exc) from None

    return cast(F, functools.wraps(func)(sync))
