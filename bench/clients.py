"""The one client both servers get: OpenSSH ``sftp`` in batch mode, same options.

Only the user name and the port differ between the two servers. ``-F /dev/null``
keeps the user's ``~/.ssh/config`` out, so "client defaults" are OpenSSH's own.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from util import BenchError, run


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one role logs in on one server."""

    user: str
    port: int


class Client:
    def __init__(self, key: Path, cipher: str | None) -> None:
        self.key = key
        self.cipher = cipher

    def ssh_options(self, log_level: str = "ERROR") -> list[str]:
        argv = ["-F", "/dev/null"]
        if self.cipher:
            argv += ["-c", self.cipher]
        argv += [
            "-i",
            str(self.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "UpdateHostKeys=no",
            "-o",
            f"LogLevel={log_level}",
        ]
        return argv

    def sftp(self, endpoint: Endpoint, batch: Path, *, log_level: str = "ERROR") -> list[str]:
        return [
            "sftp",
            *self.ssh_options(log_level),
            "-P",
            str(endpoint.port),
            "-b",
            str(batch),
            f"{endpoint.user}@127.0.0.1",
        ]

    def negotiated(self, endpoint: Endpoint, empty_batch: Path) -> dict[str, str]:
        """Key exchange, host key and cipher the client ends up with (one extra login)."""
        proc = run(
            self.sftp(endpoint, empty_batch, log_level="DEBUG1"),
            what="sftp (algorithm probe)",
            timeout=60,
        )
        found: dict[str, str] = {}
        patterns = {
            "kex": r"kex: algorithm: (\S+)",
            "host_key": r"kex: host key algorithm: (\S+)",
            "cipher": r"kex: server->client cipher: (\S+) MAC: (\S+)",
        }
        for key, pattern in patterns.items():
            match = re.search(pattern, proc.stderr)
            if match:
                found[key] = match.group(1)
                if key == "cipher":
                    found["mac"] = match.group(2)
        return found


def check(proc: subprocess.CompletedProcess[bytes] | subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode()
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise BenchError(f"sftp exited {proc.returncode}: {tail}")
