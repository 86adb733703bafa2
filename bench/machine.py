"""What the results depend on: the machine and the versions of everything involved."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path

from sshside import sshd_version

REPO = Path(__file__).resolve().parents[1]


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return ""
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb * 1024 / 1e9, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def versions() -> dict[str, str]:
    from cryptography.hazmat.backends.openssl.backend import backend

    import qprserver

    commit = _first_line(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "qprserver": qprserver.__version__,
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "python": platform.python_version(),
        "asyncssh": _package("asyncssh"),
        "cryptography": _package("cryptography"),
        "openssl_python": backend.openssl_version_text(),
        "sqlalchemy": _package("sqlalchemy"),
        "aiosqlite": _package("aiosqlite"),
        "asyncpg": _package("asyncpg"),
        "sqlite": sqlite3.sqlite_version,
        "sshd": sshd_version(),
        "ssh_client": _first_line(["ssh", "-V"]),
        "openssh_server_package": _first_line(
            ["dpkg-query", "-W", "-f", "${Version}", "openssh-server"]
        ),
    }
