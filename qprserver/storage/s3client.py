"""The connection to an S3-compatible bucket: an aiobotocore client on an event loop of
its own thread.

The ``BlobStore`` Protocol is synchronous (its callers are threads, the CLI, and the
SFTP loop for ``pread``), while aiobotocore is async. One thread per store runs the
client's loop: blocking callers ``run`` a request there and wait for it; the SFTP
loop ``submit``-s requests (read-ahead) and awaits them with ``asyncio.wrap_future``
without ever blocking. Many requests are in flight at once over one connection pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

T = TypeVar("T")

# Connections the client keeps to the endpoint: read-ahead of every open download and
# the parts of uploads share them.
MAX_CONNECTIONS = 64
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class S3Location:
    """Where the blobs are: endpoint, region, bucket, key prefix, and the key pair."""

    endpoint: str
    region: str
    bucket: str
    prefix: str
    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Error(OSError):
    """The object store failed or could not be reached; the message says what it said."""


def error_code(exc: BaseException) -> str:
    """The S3 error code of a client error ("NoSuchKey", "404", ...), else ""."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND


def as_os_error(exc: BaseException, what: str) -> OSError:
    """An OSError for a failed request, naming the request and the store's answer."""
    if isinstance(exc, OSError):
        return exc
    code = error_code(exc)
    # A HEAD's refusal has no body to name it: say what a bare 403 means.
    reason = {"403": "403 Forbidden (credentials or bucket policy)"}.get(code, code)
    reason = reason or type(exc).__name__
    return S3Error(f"S3 {what}: {reason}")


@functools.cache
def _session() -> AioSession:
    # One per process: a session loads botocore's service models once and every
    # client made from it shares them (a new session costs about a second).
    return get_session()


class S3Connection:
    """An S3 client for one bucket on a loop of its own thread."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.bucket = location.bucket
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="s3-client", daemon=True
        )
        self._thread.start()
        self._exit = AsyncExitStack()
        try:
            self.client: S3Client = self.run(self._open())
        except BaseException:
            self._stop_loop()
            raise

    async def _open(self) -> S3Client:
        loc = self.location
        config = AioConfig(
            max_pool_connections=MAX_CONNECTIONS,
            connect_timeout=10,
            read_timeout=60,
            retries={"max_attempts": 3, "mode": "standard"},
            # Path-style addressing works with every S3-compatible server and needs no
            # DNS name per bucket.
            s3={"addressing_style": "path"},
            # Checksums only where the operation requires them: several S3-compatible
            # servers refuse the newer default trailers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = _session().create_client(
            "s3",
            endpoint_url=loc.endpoint,
            region_name=loc.region,
            aws_access_key_id=loc.access_key_id,
            aws_secret_access_key=loc.secret_access_key,
            config=config,
        )
        return await self._exit.enter_async_context(client)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a request on the client's loop; a future for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], what: str = "request") -> T:
        """Run a request and wait for it (blocking; never on the client's own loop).

        Failures come out as OSError (``S3Error``), except a missing key's ClientError,
        which callers that expect it test with ``is_not_found``.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("S3Connection.run called on its own loop")
        try:
            return self.submit(coro).result()
        except (ClientError, BotoCoreError) as exc:
            if is_not_found(exc):
                raise
            raise as_os_error(exc, what) from exc

    def key(self, name: str) -> str:
        """The object key of name under the configured prefix."""
        return self.location.prefix + name

    def close(self) -> None:
        """Close the client's connections and stop its thread; safe to call twice."""
        if not self._loop.is_running():
            return
        try:
            self.submit(self._exit.aclose()).result(timeout=30)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
