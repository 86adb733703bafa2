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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from clients import Client, Endpoint
from populate import FileSpec, populate
from qprside import QprServer
from run import ACCOUNTS, LV_IK, SAME_KEX
from scenarios import SUBJECT_IK
from util import PdfMaker, log, run

SIZE = 100_000
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cipher", help="force this cipher on both sides (default: client's)")
    parser.add_argument("--db-url", help="postgresql+asyncpg://…: PostgreSQL, a fresh schema")
    parser.add_argument("--hold", type=int, default=0, help="documents the depositor holds")
    parser.add_argument("--py-spy", type=Path, help="record the serving process to this file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    base = Path(tempfile.mkdtemp(prefix="qprbench-mput-"))
    qpr: QprServer | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        key = base / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], what="ssh-keygen")
        qpr = QprServer(base / "qprserver", db_url=args.db_url, workers=1)
        qpr.write_config(None)
        qpr.cli("init")
        for role in ("md", "lv"):
            ik, kind, name = ACCOUNTS[role]
            qpr.cli_inprocess("account", "add", ik, "--name", name, "--role", kind)
            qpr.cli_inprocess("account", "key", "add", ik, f"{key}.pub")
        qpr.cli_inprocess(
            "route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_IK
        )
        if args.hold:
            hold(qpr, base, args.hold)
        qpr.write_config(
            [args.cipher] if args.cipher else None, [SAME_KEX] if args.cipher else None
        )
        qpr.start()
        client = Client(key, args.cipher)
        depositor = Endpoint(ACCOUNTS["md"][0], qpr.port)
        if args.py_spy:
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            argv = [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(args.py_spy)]
            spy = subprocess.Popen(
                [*argv, "--pid", str(qpr.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        maker = PdfMaker()
        for i in range(args.runs):
            source = base / f"mput-{i}"
            source.mkdir()
            for j in range(args.count):
                maker.write(source / f"{SUBJECT_IK}_c{i:02d}{j:05d}.pdf", SIZE, f"c{i}-{j}")
            batch = base / f"mput-{i}.txt"
            batch.write_text(f"mput {source}/* outbox/\n")
            os.sync()
            before = cpu_seconds(qpr.pid)
            start = time.perf_counter()
            subprocess.run(client.sftp(depositor, batch), check=True, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            used = cpu_seconds(qpr.pid) - before
            log(
                f"run {i + 1}/{args.runs}: {args.count} documents in {wall:.3f} s "
                f"({args.count / wall:.1f}/s); server CPU {used:.2f} s, "
                f"{1000 * used / args.count:.2f} ms per upload"
            )
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        if qpr is not None:
            qpr.stop()
            qpr.drop_schema()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
