"""qprserver as the users get it: the ``qprserver`` command with its own config.

Everything goes through the CLI (``init``, ``account add``, ``account key add``,
``route add``, ``serve``) except the bulk documents, which ``populate.py`` writes
in-process (see there).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import procmem
from util import (
    BenchError,
    free_port,
    log_tail,
    pg_admin,
    run,
    shell_join,
    stop_process,
    wait_for_banner,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "config" / "qprserver.example.toml"


def _toml_value(value: object) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(data: dict[str, dict[str, object]]) -> str:
    """Tables of scalars and lists, and tables of such tables (``[kinds.x]``)."""
    lines: list[str] = []
    for table, values in data.items():
        nested = {k: v for k, v in values.items() if isinstance(v, dict)}
        plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
        if plain:
            lines.append(f"[{table}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in plain.items()]
            lines.append("")
        for name, sub in nested.items():
            lines.append(f"[{table}.{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in sub.items()]
            lines.append("")
    return "\n".join(lines)


class QprServer:
    """One qprserver instance in a folder of its own."""

    def __init__(
        self, root: Path, *, db_url: str | None, workers: int, metrics: bool = False
    ) -> None:
        self.root = root
        self.config = root / "qprserver.toml"
        self.workers = workers
        self.port = free_port()
        # With metrics: the operations listener on a port of its own ([metrics]).
        self.metrics_port = free_port() if metrics else None
        self.bin = str(Path(sys.executable).with_name("qprserver"))
        self.log_path = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.commands: list[str] = []  # every CLI command run, for the results
        self.schema = ""
        self.database = "postgresql" if db_url else "sqlite"
        if db_url:
            if not db_url.startswith("postgresql+asyncpg://"):
                raise BenchError("--db-url must be postgresql+asyncpg://…")
            self.db_url = db_url
            # A schema of its own, dropped at the end: nothing else in that database is touched.
            self.schema = f"qprbench_{uuid.uuid4().hex[:12]}"
            pg_admin(db_url, f"CREATE SCHEMA {self.schema}")
        else:
            self.db_url = f"sqlite+aiosqlite:///{root / 'qprserver.db'}"
        root.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self, ciphers: list[str] | None, kex: list[str] | None = None) -> str:
        example = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        server: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "host_keys": ["keys/ssh_host_ed25519_key"],
            "workers": self.workers,
            "shutdown_grace": 2.0,
        }
        if ciphers:
            server["ciphers"] = ciphers
        if kex:
            server["kex"] = kex
        data: dict[str, dict[str, object]] = {
            "server": server,
            "storage": {
                "data_dir": "data",
                "max_upload_bytes": 8 * 1024**3,
                "depositor_quota_bytes": 1024**4,
            },
            "database": {"url": self.db_url, "schema": self.schema},
            "security": {
                "totp_key": "keys/totp.key",
                # 32 clients log in at once from 127.0.0.1; sshd gets MaxStartups alike.
                "max_unauthenticated_per_address": 256,
            },
            "kinds": example["kinds"],
        }
        if self.metrics_port is not None:
            data["metrics"] = {"enabled": True, "port": self.metrics_port}
        text = toml_text(data)
        self.config.write_text(text, encoding="utf-8")
        return text

    def cli(self, *args: str) -> str:
        """``qprserver --config <config> ARGS`` as a process of its own."""
        argv = [self.bin, "--config", str(self.config), *args]
        self.commands.append(shell_join(argv))
        return run(argv, what=f"qprserver {' '.join(args[:2])}", timeout=300).stdout

    def cli_inprocess(self, *args: str) -> str:
        """The same command through the same click CLI, without a second of start-up each."""
        import click

        from qprserver.cli.main import cli

        argv = ["--config", str(self.config), *args]
        self.commands.append(shell_join([self.bin, *argv]))
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                cli.main(args=argv, prog_name="qprserver", standalone_mode=False)
        except click.ClickException as exc:
            raise BenchError(f"qprserver {' '.join(args[:2])}: {exc.format_message()}") from None
        return out.getvalue()

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [self.bin, "--config", str(self.config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
        log_file.close()
        try:
            wait_for_banner(self.port, b"SSH-2.0-qprserver", 60)
            self._wait_listening(start)
        except BenchError:
            self.stop()
            raise BenchError(f"qprserver did not start: {self.log_tail()}") from None
        serve = shell_join([self.bin, "--config", str(self.config), "serve"])
        if serve not in self.commands:
            self.commands.append(serve)

    def _wait_listening(self, start: int, timeout: float = 60) -> None:
        """With workers, every worker must listen before the first measurement."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(start)
                if f.read().count(b"listening on") >= self.workers:
                    return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise BenchError("not every worker is listening")

    def stop(self) -> None:
        if self.proc is not None:
            # Workers first: killing only the first process would leave them serving.
            tree = list(reversed(procmem.tree(self.proc.pid)))[:-1]
            stop_process(self.proc, 60, tree)
            self.proc = None

    def drop_schema(self) -> None:
        if self.schema:
            pg_admin(self.db_url, f"DROP SCHEMA {self.schema} CASCADE")
            self.schema = ""

    def log_tail(self) -> str:
        return log_tail(self.log_path)
