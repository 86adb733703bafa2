"""The scenarios: each a client command a user would run, timed on both servers.

Every measured run is one or more ``sftp -b <batch>`` invocations; the batch files
are the same for both servers (upload names aside, which must be new each time).
Work outside the timed part: writing batch files, ``sync`` so no earlier writes
are flushed during a run, checking the result, removing what the run left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clients import Client, Endpoint, check
from util import BenchError, human_bytes

AES_GCM = "aes128-gcm@openssh.com"
SUBJECT_IK = "510512349"
BIG_NAME = f"{SUBJECT_IK}_big.pdf"
PARALLEL_NAME = f"{SUBJECT_IK}_par.pdf"


def mget_name(i: int) -> str:
    return f"{SUBJECT_IK}_m{i:05d}.pdf"


def list_name(i: int) -> str:
    return f"{SUBJECT_IK}_l{i:06d}.pdf"


@dataclass(frozen=True)
class Sizes:
    runs: int
    big: int
    upload: int
    mget_count: int
    mget_size: int
    mput_count: int
    list_count: int
    list_size: int
    clients: int
    parallel_size: int
    logins: int
    bundle_count: int


@dataclass
class Side:
    """One server as the scenarios see it."""

    name: str  # "qprserver" or "openssh"
    endpoints: dict[str, Endpoint]  # role -> where to log in
    root_pid: Callable[[], int]
    outbox: Path | None = None  # OpenSSH: where uploads land (emptied after each run)


@dataclass
class Ctx:
    sizes: Sizes
    client: Client
    scratch: Path  # the client's own folder
    upload_source: Path
    cipher_label: str  # "default" or the forced cipher


@dataclass
class Run:
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)
    # CPU seconds of the server and of the clients spent on checks after the timed
    # part (a listing of what landed): not the scenario's, subtracted from its readings.
    check_cpu_s: float = 0.0
    check_clients_cpu_s: float = 0.0


def _settle() -> None:
    # Dirty pages of an earlier run (or of the set-up) must not be flushed inside this one.
    os.sync()


def _sftp(ctx: Ctx, side: Side, role: str, batch: Path, **kw: object) -> list[str]:
    return ctx.client.sftp(side.endpoints[role], batch, **kw)  # type: ignore[arg-type]


def _batch(ctx: Ctx, name: str, text: str) -> Path:
    path = ctx.scratch / "batches" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _timed(argv: list[str], *, cwd: Path | None = None, stdout: object = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    check(proc)
    return elapsed


class Scenario:
    id = 0
    key = ""
    # Highest acceptable ratio qprserver/OpenSSH per cipher label; absent = no target.
    targets: dict[str, float] = {}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        raise NotImplementedError

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        """The exact command of one run and the batch it reads."""
        raise NotImplementedError

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        raise NotImplementedError

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float] | None:
        return None

    @staticmethod
    def _describe(argv: list[str], batch: Path) -> dict[str, object]:
        from util import shell_join

        return {"command": shell_join(argv), "batch": batch.read_text()}


class Download(Scenario):
    id = 1
    key = "download"
    targets = {"default": 1.0, AES_GCM: 1.10}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"get {human_bytes(sizes.big)}"

    def _batch(self, ctx: Ctx) -> Path:
        # /dev/null: both servers' clients skip the same local disk write.
        return _batch(ctx, "download.txt", f"get inbox/{BIG_NAME} /dev/null\n")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx)
        return self._describe(_sftp(ctx, side, "lv", batch), batch)

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        batch = self._batch(ctx)
        _settle()
        return Run(_timed(_sftp(ctx, side, "lv", batch)))

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "MB/s", sizes.big / seconds / 1e6


class Upload(Scenario):
    id = 2
    key = "upload"
    targets = {"default": 1.0, AES_GCM: 1.15}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"put {human_bytes(sizes.upload)}"

    def _name(self, ctx: Ctx, i: int) -> str:
        tag = "d" if ctx.cipher_label == "default" else "g"
        return f"{SUBJECT_IK}_u{tag}{i:03d}.pdf"

    def _batch(self, ctx: Ctx, i: int) -> Path:
        return _batch(ctx, "upload.txt", f"put {ctx.upload_source} outbox/{self._name(ctx, i)}\n")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx, 0)
        return self._describe(_sftp(ctx, side, "md", batch), batch)

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        batch = self._batch(ctx, i)
        _settle()
        seconds = _timed(_sftp(ctx, side, "md", batch))
        if side.outbox is not None:
            landed = side.outbox / self._name(ctx, i)
            if landed.stat().st_size != ctx.sizes.upload:
                raise BenchError(f"upload to {side.name} incomplete")
            landed.unlink()
        return Run(seconds)

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "MB/s", sizes.upload / seconds / 1e6


class Mget(Scenario):
    id = 3
    key = "mget"
    targets = {"default": 1.0, AES_GCM: 1.20}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"mget {sizes.mget_count:,} × {human_bytes(sizes.mget_size)}"

    def _batch(self, ctx: Ctx) -> Path:
        return _batch(ctx, "mget.txt", "mget inbox/*\n")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx)
        described = self._describe(_sftp(ctx, side, "mget", batch), batch)
        described["cwd"] = "an empty folder"
        return described

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        batch = self._batch(ctx)
        target = ctx.scratch / f"mget-{side.name}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        _settle()
        seconds = _timed(_sftp(ctx, side, "mget", batch), cwd=target)
        got = len(os.listdir(target))
        shutil.rmtree(target)
        if got != ctx.sizes.mget_count:
            raise BenchError(f"mget from {side.name}: {got} of {ctx.sizes.mget_count} files")
        return Run(seconds)

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "files/s", sizes.mget_count / seconds


class Listing(Scenario):
    id = 4
    key = "ls"
    targets = {AES_GCM: 1.5}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"ls -l {sizes.list_count:,} entries"

    def _batch(self, ctx: Ctx) -> Path:
        return _batch(ctx, "ls.txt", "ls -l inbox\n")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx)
        return self._describe(_sftp(ctx, side, "list", batch), batch)

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        batch = self._batch(ctx)
        out = ctx.scratch / f"ls-{side.name}.txt"
        _settle()
        with out.open("wb") as sink:
            seconds = _timed(_sftp(ctx, side, "list", batch), stdout=sink)
        with out.open("rb") as listing:
            entries = sum(1 for line in listing if line.rstrip().endswith(b".pdf"))
        out.unlink()
        if entries != ctx.sizes.list_count:
            raise BenchError(f"ls on {side.name}: {entries} of {ctx.sizes.list_count} entries")
        return Run(seconds)

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "entries/s", sizes.list_count / seconds


class Parallel(Scenario):
    id = 5
    key = "parallel"
    targets = {AES_GCM: 1.0}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"{sizes.clients} clients × get {human_bytes(sizes.parallel_size)}"

    def _batch(self, ctx: Ctx) -> Path:
        return _batch(ctx, "parallel.txt", f"get inbox/{PARALLEL_NAME} /dev/null\n")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx)
        described = self._describe(_sftp(ctx, side, "lv", batch), batch)
        described["parallel"] = ctx.sizes.clients
        return described

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        argv = _sftp(ctx, side, "lv", self._batch(ctx))
        finished: list[float] = []
        failures: list[str] = []
        gate = threading.Barrier(ctx.sizes.clients + 1)

        def one() -> None:
            gate.wait()
            try:
                _timed(argv)
            except BenchError as exc:
                failures.append(str(exc))
            finished.append(time.perf_counter())

        threads = [threading.Thread(target=one) for _ in range(ctx.sizes.clients)]
        for thread in threads:
            thread.start()
        _settle()
        start = time.perf_counter()
        gate.wait()
        for thread in threads:
            thread.join()
        if failures:
            raise BenchError(
                f"{len(failures)} of {ctx.sizes.clients} clients failed: {failures[0]}"
            )
        ends = sorted(t - start for t in finished)
        return Run(ends[-1], {"fastest_client_s": ends[0], "slowest_client_s": ends[-1]})

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "MB/s total", sizes.clients * sizes.parallel_size / seconds / 1e6


class Logins(Scenario):
    id = 6
    key = "logins"
    targets = {AES_GCM: 0.5}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"{sizes.logins} logins"

    def _batch(self, ctx: Ctx) -> Path:
        return _batch(ctx, "empty.txt", "")

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx)
        described = self._describe(_sftp(ctx, side, "lv", batch), batch)
        described["repeat"] = ctx.sizes.logins
        return described

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        argv = _sftp(ctx, side, "lv", self._batch(ctx))
        _settle()
        start = time.perf_counter()
        for _ in range(ctx.sizes.logins):
            _timed(argv)
        return Run(time.perf_counter() - start)

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "logins/s", sizes.logins / seconds


SCENARIOS: list[Scenario] = [Download(), Upload(), Mget(), Listing(), Parallel(), Logins()]

BUNDLE_ID = 7
BUNDLE_KEY = "bundle"
BUNDLE_SIZE = 100_000
BUNDLE_MEMORY_LIMIT_MB = 300.0


def bundle_scenario(sizes: Sizes, db_url: str | None) -> dict[str, object]:
    """Scenario 7: the weekly bundles job over ``bundle_count`` documents (bundle.py).

    There is no OpenSSH counterpart; the figures are the build's wall time and the
    peak resident set of the process that ran it, against the memory target.
    """
    import bundle

    title = f"weekly bundle of {sizes.bundle_count:,} × {human_bytes(BUNDLE_SIZE)}"
    entry: dict[str, object] = {
        "id": BUNDLE_ID,
        "name": BUNDLE_KEY,
        "title": title,
        "cipher": "—",
        "commands": {
            "qprserver": f"python bench/bundle.py --count {sizes.bundle_count} "
            f"--size {BUNDLE_SIZE}" + (" --db-url …" if db_url else "")
        },
    }
    try:
        figures = bundle.run(sizes.bundle_count, BUNDLE_SIZE, db_url or "")
    except Exception as exc:  # a failed build is a result, not a crash of the bench
        entry["error"] = f"{type(exc).__name__}: {exc}"
        return entry
    peak = float(figures["peak_rss_mb"])
    entry["qprserver"] = figures
    entry["met"] = peak < BUNDLE_MEMORY_LIMIT_MB
    entry["status"] = (
        f"{figures['seconds']:.1f} s, {figures['zip_members']:,} members, "
        f"{figures['size'] / 1e9:.2f} GB ZIP; peak RSS {peak:.0f} MB "
        f"(of it {figures['rss_before_build_mb']:.0f} MB before the build) "
        f"< {BUNDLE_MEMORY_LIMIT_MB:.0f}: {'yes' if entry['met'] else 'NO'}"
    )
    return entry
