"""Scenario 8 from the server's side: CPU seconds per upload of an ``mput`` into /outbox.

Wall time on a shared machine says little about what one upload costs the server;
the CPU time of the serving process (``/proc/<pid>/stat``) over an ``mput`` of
``--count`` PDFs of 100 KB says more. One qprserver with ``workers = 1`` (SQLite in a
temp folder, or ``--db-url``), the depositor and the route of ``run.py``, fresh
names each run; ``--hold N`` gives the depositor N current documents first (as the
populated scenarios before scenario 8 of ``run.py`` do); ``--py-spy OUT`` records
the serving process meanwhile (``py-spy record -r 200 -f raw``, installed in the same virtualenv).

    python bench/mput_cpu.py [--count 100] [--runs 3] [--hold 105000]
                             [--cipher aes128-gcm@openssh.com]
                             [--db-url postgresql+asyncpg://…] [--py-spy OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from clients import Endpoint
from cpuside import add_common_args, cpu_seconds, served
from populate import FileSpec, populate
from qprside import QprServer
from run import ACCOUNTS, LV_IK
from scenarios import SUBJECT_IK
from util import PdfMaker, log

SIZE = 100_000


def hold(qpr: QprServer, base: Path, count: int) -> None:
    """Give the depositor ``count`` current documents (one blob, many names)."""
    held = base / "held.pdf"
    PdfMaker().write(held, SIZE, "held")
    spec = FileSpec("", held, hashlib.sha256(held.read_bytes()).hexdigest(), SIZE)
    specs = [replace(spec, name=f"{SUBJECT_IK}_held{i:06d}.pdf") for i in range(count)]
    start = time.perf_counter()
    populate(qpr.config, ACCOUNTS["md"][0], SUBJECT_IK, {LV_IK: specs})
    log(f"depositor holds {count} documents ({time.perf_counter() - start:.1f} s)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100, help="files per mput (default 100)")
    parser.add_argument("--db-url", help="postgresql+asyncpg://…: PostgreSQL, a fresh schema")
    parser.add_argument("--hold", type=int, default=0, help="documents the depositor holds")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()

    def held(qpr: QprServer, base: Path) -> None:
        if args.hold:
            hold(qpr, base, args.hold)

    with served("qprbench-mput-", ("md", "lv"), args, db_url=args.db_url, prepare=held) as on:
        depositor = Endpoint(ACCOUNTS["md"][0], on.qpr.port)
        maker = PdfMaker()
        for i in range(args.runs):
            source = on.base / f"mput-{i}"
            source.mkdir()
            for j in range(args.count):
                maker.write(source / f"{SUBJECT_IK}_c{i:02d}{j:05d}.pdf", SIZE, f"c{i}-{j}")
            batch = on.base / f"mput-{i}.txt"
            batch.write_text(f"mput {source}/* outbox/\n")
            os.sync()
            before = cpu_seconds(on.qpr.pid)
            start = time.perf_counter()
            subprocess.run(on.client.sftp(depositor, batch), check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            used = cpu_seconds(on.qpr.pid) - before
            log(
                f"run {i + 1}/{args.runs}: {args.count} documents in {wall:.3f} s "
                f"({args.count / wall:.1f}/s); server CPU {used:.2f} s, "
                f"{1000 * used / args.count:.2f} ms per upload"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
