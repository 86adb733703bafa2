"""What the server-side CPU benches share (``mget_cpu.py``, ``mput_cpu.py``,
``put_cpu.py``): one qprserver with ``workers = 1`` and the accounts and route of
``run.py``, an optional py-spy recording of the serving process, and that process's
CPU seconds read from ``/proc``. The server runs the ``qprserver`` that
``PYTHONPATH`` finds, so two trees can be compared run by run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clients import Client
from qprside import QprServer
from run import ACCOUNTS, LV_IK, SAME_KEX

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cipher", help="force this cipher on both sides (default: client's)")
    parser.add_argument("--py-spy", type=Path, help="record the serving process to this file")


@dataclass(frozen=True)
class Served:
    """The running server, the scratch folder and a client with the accounts' key."""

    base: Path
    qpr: QprServer
    client: Client


def _record(out: Path, pid: int) -> subprocess.Popen[bytes]:
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    spy = subprocess.Popen(
        [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches
    return spy


@contextlib.contextmanager
def served(
    prefix: str,
    roles: tuple[str, ...],
    args: argparse.Namespace,
    *,
    db_url: str | None = None,
    prepare: Callable[[QprServer, Path], None] | None = None,
) -> Iterator[Served]:
    """A server with the ``roles`` of ``run.ACCOUNTS`` (``prepare`` runs before it
    starts), stopped and cleaned up afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    qpr: QprServer | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        qpr = QprServer(base / "qprserver", db_url=db_url, workers=1)
        qpr.write_config(None)
        qpr.cli("init")
        for role in roles:
            ik, kind, name = ACCOUNTS[role]
            qpr.cli_inprocess("account", "add", ik, "--name", name, "--role", kind)
            qpr.cli_inprocess("account", "key", "add", ik, f"{key}.pub")
        qpr.cli_inprocess(
            "route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_IK
        )
        if prepare is not None:
            prepare(qpr, base)
        cipher = args.cipher
        qpr.write_config([cipher] if cipher else None, [SAME_KEX] if cipher else None)
        qpr.start()
        if args.py_spy:
            spy = _record(args.py_spy, qpr.pid)
        yield Served(base, qpr, Client(key, cipher))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        if qpr is not None:
            qpr.stop()
            qpr.drop_schema()
        shutil.rmtree(base, ignore_errors=True)
