"""Scenario 2 from the server's side: CPU seconds per MiB of one large ``put`` into /outbox.

The CPU time of the serving process (``/proc/<pid>/stat``, user and system) over a
``put`` of one ``--size`` MiB PDF says what an upload costs the server, which wall
time on a shared machine does not; so do its system calls that wrote (sends and
file writes, ``syscw`` of ``/proc/<pid>/io``). One qprserver with ``workers = 1``
(SQLite in a temp folder), the depositor and the route of ``run.py``, a fresh name each run;
``--py-spy OUT`` records the serving process meanwhile (``py-spy record -r 200 -f
raw``). The server runs the ``qprserver`` that ``PYTHONPATH`` finds, so two trees
can be compared run by run.

    python bench/put_cpu.py [--size 1024] [--runs 3] [--cipher aes128-gcm@openssh.com]
                            [--py-spy OUT]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from clients import Endpoint
from cpuside import add_common_args, cpu_seconds, served
from run import ACCOUNTS
from scenarios import SUBJECT_IK
from util import MiB, PdfMaker, log


def write_calls(pid: int) -> int:
    """System calls that wrote (send, pwrite, pwritev …) of a process so far."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB per put (default 1024)")
    add_common_args(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with served("qprbench-put-", ("md", "lv"), args) as on:
        qpr = on.qpr
        depositor = Endpoint(ACCOUNTS["md"][0], qpr.port)
        source = on.base / "upload.pdf"
        PdfMaker().write(source, args.size * MiB, "put-cpu")
        for i in range(args.runs):
            batch = on.base / f"put-{i}.txt"
            batch.write_text(f"put {source} outbox/{SUBJECT_IK}_p{os.getpid()}{i:03d}.pdf\n")
            os.sync()
            before = cpu_seconds(qpr.pid)
            calls = write_calls(qpr.pid)
            start = time.perf_counter()
            subprocess.run(on.client.sftp(depositor, batch), check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            used = cpu_seconds(qpr.pid) - before
            calls = write_calls(qpr.pid) - calls
            log(
                f"run {i + 1}/{args.runs}: {args.size} MiB in {wall:.3f} s "
                f"({args.size * MiB / wall / 1e6:.0f} MB/s); server CPU {used:.2f} s, "
                f"{1000 * used / args.size:.3f} ms per MiB; "
                f"{calls / args.size:.1f} write calls per MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
