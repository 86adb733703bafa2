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
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import Client, Endpoint
from mput_cpu import cpu_seconds
from populate import FileSpec, populate
from qprside import QprServer
from run import ACCOUNTS, LV_IK, SAME_KEX
from scenarios import SUBJECT_IK, mget_name
from util import PdfMaker, log

SIZE = 100_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="files per mget (default 1000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cipher", help="force this cipher on both sides (default: client's)")
    parser.add_argument("--db-url", help="postgresql+asyncpg://…: PostgreSQL, a fresh schema")
    parser.add_argument("--py-spy", type=Path, help="record the serving process to this file")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    base = Path(tempfile.mkdtemp(prefix="qprbench-mget-"))
    qpr: QprServer | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        qpr = QprServer(base / "qprserver", db_url=args.db_url, workers=1)
        qpr.write_config(None)
        qpr.cli("init")
        for role in ("md", "lv", "mget"):
            ik, kind, name = ACCOUNTS[role]
            qpr.cli_inprocess("account", "add", ik, "--name", name, "--role", kind)
            qpr.cli_inprocess("account", "key", "add", ik, f"{key}.pub")
        qpr.cli_inprocess(
            "route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_IK
        )
        source = base / "source"
        source.mkdir()
        maker = PdfMaker()
        specs = []
        for i in range(1, args.count + 1):
            path = source / mget_name(i)
            specs.append(FileSpec(path.name, path, maker.write(path, SIZE, path.name), SIZE))
        populate(qpr.config, ACCOUNTS["md"][0], SUBJECT_IK, {ACCOUNTS["mget"][0]: specs})
        qpr.write_config(
            [args.cipher] if args.cipher else None, [SAME_KEX] if args.cipher else None
        )
        qpr.start()
        client = Client(key, args.cipher)
        recipient = Endpoint(ACCOUNTS["mget"][0], qpr.port)
        if args.py_spy:
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            argv = [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(args.py_spy)]
            spy = subprocess.Popen(
                [*argv, "--pid", str(qpr.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches
        batch = base / "mget.txt"
        batch.write_text("mget inbox/*\n")
        for i in range(args.runs):
            target = base / f"mget-{i}"
            target.mkdir()
            before = cpu_seconds(qpr.pid)
            start = time.perf_counter()
            subprocess.run(
                client.sftp(recipient, batch), check=True, stdout=subprocess.DEVNULL, cwd=target
            )
            wall = time.perf_counter() - start
            used = cpu_seconds(qpr.pid) - before
            got = sum(1 for _ in target.iterdir())
            if got != args.count:
                raise SystemExit(f"mget: {got} of {args.count} files")
            log(
                f"run {i + 1}/{args.runs}: {args.count} files in {wall:.3f} s "
                f"({args.count / wall:.0f}/s); server CPU {used:.2f} s, "
                f"{1e6 * used / args.count:.0f} µs per file"
            )
            shutil.rmtree(target)
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
