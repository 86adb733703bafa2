"""The per-file scenarios: many small files in one session, and in four at once.

Scenario 8 is a Medizinischer Dienst depositing its week: one ``sftp -b`` session
``mput`` of ``mput_count`` PDFs into ``/outbox``. On qprserver each file takes the
real acceptance path (checks, routing, protocol, receipt mail in the outbox, fsync
and commit before the client's close is answered); OpenSSH writes plain files
without fsync. Each run uploads fresh files under new names (written before the
timed part), and afterwards qprserver's ``/outbox`` must list every one of them as
a document.

Scenario 9 is a collecting script with parallelism: the ``mget_count`` files of
scenario 3 fetched by four ``sftp -b`` sessions at once, each with its own quarter
as one ``get`` per file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import procmem
from clients import check
from scenarios import (
    AES_GCM,
    SUBJECT_IK,
    Ctx,
    Run,
    Scenario,
    Side,
    Sizes,
    _batch,
    _settle,
    _sftp,
    _timed,
    mget_name,
)
from util import BenchError, PdfMaker, human_bytes

PARALLEL_SESSIONS = 4


class Mput(Scenario):
    id = 8
    key = "mput"
    targets = {"default": 1.5, AES_GCM: 1.5}  # noqa: RUF012

    def __init__(self) -> None:
        self._maker: PdfMaker | None = None

    def title(self, sizes: Sizes) -> str:
        return f"mput {sizes.mput_count:,} × {human_bytes(sizes.mget_size)}"

    def _tag(self, ctx: Ctx, i: int) -> str:
        return f"{'d' if ctx.cipher_label == 'default' else 'g'}{i:02d}"

    def _source(self, ctx: Ctx, i: int) -> Path:
        return ctx.scratch / f"mput-{self._tag(ctx, i)}"

    def _batch(self, ctx: Ctx, i: int) -> Path:
        return _batch(ctx, "mput.txt", f"mput {self._source(ctx, i)}/* outbox/\n")

    def _write_sources(self, ctx: Ctx, i: int) -> Path:
        """Fresh files under names no run used before (each run makes new documents)."""
        if self._maker is None:
            self._maker = PdfMaker()
        source = self._source(ctx, i)
        if source.exists():
            return source
        source.mkdir()
        tag = self._tag(ctx, i)
        for j in range(ctx.sizes.mput_count):
            name = f"{SUBJECT_IK}_p{tag}{j:05d}.pdf"
            self._maker.write(source / name, ctx.sizes.mget_size, f"{tag}-{j}")
        return source

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batch(ctx, 0)
        return self._describe(_sftp(ctx, side, "md", batch), batch)

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        source = self._write_sources(ctx, i)
        batch = self._batch(ctx, i)
        _settle()
        seconds = _timed(_sftp(ctx, side, "md", batch))
        names = set(os.listdir(source))
        if side.outbox is not None:
            landed = set(os.listdir(side.outbox))
            if not names <= landed:
                raise BenchError(f"mput to {side.name}: {len(names - landed)} files missing")
            for name in landed:
                (side.outbox / name).unlink()
            shutil.rmtree(source)  # OpenSSH runs second: both sides are done with it
            return Run(seconds)
        before, clients_before = procmem.tree_cpu(side.root_pid()), procmem.children_cpu()
        listed = self._listed(ctx, side)
        check_cpu = procmem.tree_cpu(side.root_pid()) - before
        check_clients_cpu = procmem.children_cpu() - clients_before
        if not names <= listed:
            raise BenchError(
                f"mput to {side.name}: {len(names - listed)} of {len(names)} "
                "files did not become documents"
            )
        return Run(seconds, check_cpu_s=check_cpu, check_clients_cpu_s=check_clients_cpu)

    def _listed(self, ctx: Ctx, side: Side) -> set[str]:
        batch = _batch(ctx, "mput-ls.txt", "ls -1 outbox\n")
        proc = subprocess.run(
            _sftp(ctx, side, "md", batch),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        check(proc)
        return {Path(line.strip()).name for line in proc.stdout.decode().splitlines()}

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "documents/s", sizes.mput_count / seconds


class ParallelMget(Scenario):
    id = 9
    key = "mget4"
    targets = {"default": 0.8, AES_GCM: 0.9}  # noqa: RUF012

    def title(self, sizes: Sizes) -> str:
        return f"mget {sizes.mget_count:,} in {PARALLEL_SESSIONS} sessions"

    def _batches(self, ctx: Ctx) -> list[Path]:
        count = ctx.sizes.mget_count
        bounds = [count * q // PARALLEL_SESSIONS for q in range(PARALLEL_SESSIONS + 1)]
        return [
            _batch(
                ctx,
                f"mget4-{q}.txt",
                "".join(
                    f"get inbox/{mget_name(n)}\n" for n in range(bounds[q] + 1, bounds[q + 1] + 1)
                ),
            )
            for q in range(PARALLEL_SESSIONS)
        ]

    def commands(self, ctx: Ctx, side: Side) -> dict[str, object]:
        batch = self._batches(ctx)[0]
        described = self._describe(_sftp(ctx, side, "mget", batch), batch)
        described["parallel"] = f"{PARALLEL_SESSIONS} sessions, one quarter of the names each"
        described["cwd"] = "an empty folder"
        return described

    def measure(self, ctx: Ctx, side: Side, i: int) -> Run:
        argvs = [_sftp(ctx, side, "mget", batch) for batch in self._batches(ctx)]
        target = ctx.scratch / f"mget4-{side.name}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        failures: list[str] = []
        gate = threading.Barrier(PARALLEL_SESSIONS + 1)

        def one(argv: list[str]) -> None:
            gate.wait()
            try:
                _timed(argv, cwd=target)
            except BenchError as exc:
                failures.append(str(exc))

        threads = [threading.Thread(target=one, args=(argv,)) for argv in argvs]
        for thread in threads:
            thread.start()
        _settle()
        start = time.perf_counter()
        gate.wait()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        got = len(os.listdir(target))
        shutil.rmtree(target)
        if failures:
            raise BenchError(
                f"{len(failures)} of {PARALLEL_SESSIONS} sessions failed: {failures[0]}"
            )
        if got != ctx.sizes.mget_count:
            raise BenchError(f"mget4 from {side.name}: {got} of {ctx.sizes.mget_count} files")
        return Run(seconds)

    def throughput(self, sizes: Sizes, seconds: float) -> tuple[str, float]:
        return "files/s", sizes.mget_count / seconds


MANY_FILE_SCENARIOS: list[Scenario] = [Mput(), ParallelMget()]
