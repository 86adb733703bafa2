"""Scenario 3 from the server's side: CPU seconds per file of an ``mget`` from an inbox.

Like ``mput_cpu.py`` for uploads: one qprserver with ``workers = 1`` (SQLite in a temp
folder, or ``--db-url``), ``--count`` documents of 100 KB delivered to the mget
recipient, then ``--runs`` times ``mget inbox/*`` with one ``sftp -b`` session; the
CPU time of the serving process (``/proc/<pid>/stat``) per file says what a download
costs the server, whatever else the machine does. ``--py-spy OUT`` records the
serving process meanwhile (``py-spy record -r 200 -f raw``).

    python bench/mget_cpu.py [--count 1000] [--runs 3] [--cipher aes128-gcm@openssh.com]
                             [--db-url postgresql+asyncpg://…] [--py-spy OUT]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clients import Endpoint
from cpuside import add_common_args, cpu_seconds, served
from populate import FileSpec, populate
from qprside import QprServer
from run import ACCOUNTS
from scenarios import SUBJECT_IK, mget_name
from util import PdfMaker, log

SIZE = 100_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="files per mget (default 1000)")
    parser.add_argument("--db-url", help="postgresql+asyncpg://…: PostgreSQL, a fresh schema")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()

    def inbox(qpr: QprServer, base: Path) -> None:
        source = base / "source"
        source.mkdir()
        maker = PdfMaker()
        specs = []
        for i in range(1, args.count + 1):
            path = source / mget_name(i)
            specs.append(FileSpec(path.name, path, maker.write(path, SIZE, path.name), SIZE))
        populate(qpr.config, ACCOUNTS["md"][0], SUBJECT_IK, {ACCOUNTS["mget"][0]: specs})

    roles = ("md", "lv", "mget")
    with served("qprbench-mget-", roles, args, db_url=args.db_url, prepare=inbox) as on:
        recipient = Endpoint(ACCOUNTS["mget"][0], on.qpr.port)
        batch = on.base / "mget.txt"
        batch.write_text("mget inbox/*\n")
        for i in range(args.runs):
            target = on.base / f"mget-{i}"
            target.mkdir()
            before = cpu_seconds(on.qpr.pid)
            start = time.perf_counter()
            subprocess.run(
                on.client.sftp(recipient, batch),
                check=True,
                stdout=subprocess.DEVNULL,
                cwd=target,
            )
            wall = time.perf_counter() - start
            used = cpu_seconds(on.qpr.pid) - before
            got = sum(1 for _ in target.iterdir())
            if got != args.count:
                raise SystemExit(f"mget: {got} of {args.count} files")
            log(
                f"run {i + 1}/{args.runs}: {args.count} files in {wall:.3f} s "
                f"({args.count / wall:.0f}/s); server CPU {used:.2f} s, "
                f"{1e6 * used / args.count:.0f} µs per file"
            )
            shutil.rmtree(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
