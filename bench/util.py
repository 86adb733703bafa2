"""Small helpers shared by the benchmark modules."""

from __future__ import annotations

import hashlib
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the result table."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


_reserved: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now, never 22, never handed out before.

    Taken below the kernel's ephemeral range: ports there are what outgoing connections
    and other programs' port-0 listeners get, so one could take it before a server binds.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        if port in _reserved:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _reserved.add(port)
        return port
    raise BenchError("no free TCP port found on 127.0.0.1")


def wait_for_banner(port: int, prefix: bytes, timeout: float) -> None:
    """Wait until something on 127.0.0.1:port greets with an SSH banner starting with prefix."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                banner = sock.recv(256)
                if banner.startswith(prefix):
                    return
                last = banner[:60].decode(errors="replace")
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"no SSH server on port {port} after {timeout:.0f}s ({last})")


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    input_text: str | None = None,
    timeout: float = 600,
    what: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a command; BenchError with its output when it fails."""
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise BenchError(
            f"{what or argv[0]} failed with exit {proc.returncode}: {' | '.join(output)}"
        )
    return proc


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000} KB"
    return f"{n} B"


class PdfMaker:
    """PDF-shaped content (``%PDF-`` header, ``%%EOF`` trailer) that hashes distinctly per seed.

    The filler is random bytes drawn once, so writing gigabytes costs no more than
    the writes; SSH does not compress by default, so its content does not matter.
    """

    BLOCK = 4 * MiB

    def __init__(self) -> None:
        self._block = os.urandom(self.BLOCK)

    def write(self, path: Path, size: int, seed: str) -> str:
        """Write a file of exactly size bytes; return its SHA-256."""
        head = f"%PDF-1.7\n% {seed}\n".encode()
        tail = b"\n%%EOF\n"
        if size < len(head) + len(tail):
            raise ValueError("file too small for a PDF shape")
        digest = hashlib.sha256()
        remaining = size - len(head) - len(tail)
        with path.open("wb") as out:
            for chunk in self._chunks(head, remaining, tail):
                out.write(chunk)
                digest.update(chunk)
        return digest.hexdigest()

    def _chunks(self, head: bytes, remaining: int, tail: bytes) -> Iterator[bytes | memoryview]:
        yield head
        view = memoryview(self._block)
        while remaining > 0:
            n = min(remaining, self.BLOCK)
            yield view[:n]
            remaining -= n
        yield tail


def pg_admin(url: str, sql: str) -> None:
    """One statement on PostgreSQL outside a transaction (CREATE/DROP SCHEMA)."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run_it() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run_it())


def stop_process(proc: subprocess.Popen[bytes], timeout: float, tree: list[int]) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL to tree (pids, children first) and proc."""
    import contextlib
    import signal

    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for pid in [*tree, proc.pid]:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file on one line, or "" when it cannot be read."""
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
