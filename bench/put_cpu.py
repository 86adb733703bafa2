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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import Client, Endpoint
from mput_cpu import cpu_seconds
from qprside import QprServer
from run import ACCOUNTS, LV_IK, SAME_KEX
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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cipher", help="force this cipher on both sides (default: client's)")
    parser.add_argument("--py-spy", type=Path, help="record the serving process to this file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    base = Path(tempfile.mkdtemp(prefix="qprbench-put-"))
    qpr: QprServer | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        qpr = QprServer(base / "qprserver", db_url=None, workers=1)
        qpr.write_config(None)
        qpr.cli("init")
        for role in ("md", "lv"):
            ik, kind, name = ACCOUNTS[role]
            qpr.cli_inprocess("account", "add", ik, "--name", name, "--role", kind)
            qpr.cli_inprocess("account", "key", "add", ik, f"{key}.pub")
        qpr.cli_inprocess(
            "route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_IK
        )
        qpr.write_config(
            [args.cipher] if args.cipher else None, [SAME_KEX] if args.cipher else None
        )
        qpr.start()
        client = Client(key, args.cipher)
        depositor = Endpoint(ACCOUNTS["md"][0], qpr.port)
        source = base / "upload.pdf"
        PdfMaker().write(source, args.size * MiB, "put-cpu")
        if args.py_spy:
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            argv = [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(args.py_spy)]
            spy = subprocess.Popen(
                [*argv, "--pid", str(qpr.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        for i in range(args.runs):
            batch = base / f"put-{i}.txt"
            batch.write_text(f"put {source} outbox/{SUBJECT_IK}_p{os.getpid()}{i:03d}.pdf\n")
            os.sync()
            before = cpu_seconds(qpr.pid)
            calls = write_calls(qpr.pid)
            start = time.perf_counter()
            subprocess.run(client.sftp(depositor, batch), check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            used = cpu_seconds(qpr.pid) - before
            calls = write_calls(qpr.pid) - calls
            log(
                f"run {i + 1}/{args.runs}: {args.size} MiB in {wall:.3f} s "
                f"({args.size * MiB / wall / 1e6:.0f} MB/s); server CPU {used:.2f} s, "
                f"{1000 * used / args.size:.3f} ms per MiB; "
                f"{calls / args.size:.1f} write calls per MiB"
            )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        if qpr is not None:
            qpr.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
