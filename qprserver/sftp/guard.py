"""``guarded``: unexpected exceptions of an SFTP request become a plain failure.

An SFTP error raised on purpose reaches the client as it is; anything else is
logged with its traceback and answered "Internal error", so no exception text of
the backend ever reaches a client. The policy is written once (``_internal_error``);
the decorator only picks the wrapper for a plain, coroutine or async generator
method. The wrappers use ``try`` rather than a context manager: a ``try`` costs
nothing until something is raised, a ``with`` two calls per request.

Each request also binds the log ids (``session`` of its connection, a new
``request``), so the events the domain tells while serving it carry them. ``read``
and ``write`` are not wrapped and bind nothing, nor do listings.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextvars import Token
from typing import Any, TypeVar, cast

import asyncssh

from qprserver.observability import logs

log = logging.getLogger("qprserver.sftp.session")

F = TypeVar("F", bound=Callable[..., Any])


def _internal_error(name: str, exc: Exception) -> asyncssh.SFTPFailure:
    """Log what went wrong in request ``name``; the plain failure the client gets."""
    log.error("SFTP %s failed", name, exc_info=exc)
    return asyncssh.SFTPFailure("Internal error")


def _bind(args: tuple[Any, ...]) -> Token[Any]:
    """Bind the log ids of a request of the session ``args[0]`` (a ``MailboxSFTPServer``,
    whose connection state names the session)."""
    state = getattr(args[0], "state", None) if args else None
    session = getattr(state, "session", None)
    if session is None:
        return logs.bind(request=logs.new_id())
    return logs.bind(session=session, request=logs.new_id())


def guarded(func: F) -> F:
    """Turn unexpected exceptions into a plain failure; internals never reach a client."""
    name = func.__name__
    if inspect.isasyncgenfunction(func):
        # Listings tell no events; and an abandoned generator would be closed
        # outside the request's context, where its ids could not be unbound.
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
            ids = _bind(args)
            try:
                return await func(*args, **kwargs)
            except asyncssh.SFTPError:
                raise
            except Exception as exc:
                raise _internal_error(name, exc) from None
            finally:
                logs.unbind(ids)

        return cast(F, functools.wraps(func)(coro))

    def sync(*args: Any, **kwargs: Any) -> Any:
        ids = _bind(args)
        try:
            return func(*args, **kwargs)
        except asyncssh.SFTPError:
            raise
        except Exception as exc:
            raise _internal_error(name, exc) from None
        finally:
            logs.unbind(ids)

    return cast(F, functools.wraps(func)(sync))
