"""The reference: OpenSSH ``sshd`` with ``internal-sftp`` serving plain folders.

One sshd listens on one loopback port per role (never 22); ``Match LocalPort`` forces
``internal-sftp -d <folder>`` there, so the client's relative paths (``inbox/x``)
are the same as on qprserver, whose accounts start at their virtual root. No
``ChrootDirectory``: it needs root-owned parents, which a temp folder has not.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from util import BenchError, free_port, log, log_tail, run, stop_process, wait_for_banner

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


def ensure_sshd() -> Path:
    """The sshd binary; installs Debian's openssh-server when it is missing."""
    if SSHD.exists():
        return SSHD
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"{SSHD} is missing: install openssh-server (apt-get, as root)")
    log("installing openssh-server (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"],
    ):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-300:]}")
    if not SSHD.exists():
        raise BenchError(f"openssh-server installed, but {SSHD} is still missing")
    return SSHD


def sshd_version() -> str:
    proc = subprocess.run([str(SSHD), "-V"], capture_output=True, text=True, check=False)
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    return lines[0] if lines else "?"


class OpenSSHServer:
    """sshd with its own config, host key and authorized keys in the temp folder."""

    def __init__(self, root: Path, folders: dict[str, Path], client_pub: Path) -> None:
        self.root = root
        self.folders = folders
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.ports: dict[str, int] = {}
        for role in folders:
            port = free_port()
            while port in self.ports.values():
                port = free_port()
            self.ports[role] = port
        self.config = root / "sshd_config"
        self.host_key = root / "ssh_host_ed25519_key"
        self.authorized_keys = root / "authorized_keys"
        self.log_path = root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)],
            what="ssh-keygen (sshd host key)",
        )
        shutil.copyfile(client_pub, self.authorized_keys)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self, ciphers: list[str] | None, kex: list[str] | None = None) -> str:
        lines = [f"Port {port}" for port in self.ports.values()]
        lines += [
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTTY no",
            # 32 clients connect at once; the default 10:30:100 would drop some.
            "MaxStartups 256:30:512",
            "LogLevel ERROR",
            "Subsystem sftp internal-sftp",
        ]
        if ciphers:
            lines.append(f"Ciphers {','.join(ciphers)}")
        if kex:
            lines.append(f"KexAlgorithms {','.join(kex)}")
        for role, port in self.ports.items():
            lines += [
                f"Match LocalPort {port}",
                f"    ForceCommand internal-sftp -d {self.folders[role]}",
            ]
        text = "\n".join(lines) + "\n"
        self.config.write_text(text)
        return text

    def start(self) -> None:
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        run([str(SSHD), "-t", "-f", str(self.config)], what="sshd -t (config test)")
        log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
        log_file.close()
        try:
            for port in self.ports.values():
                wait_for_banner(port, b"SSH-2.0-OpenSSH", 15)
        except BenchError:
            self.stop()
            raise BenchError(f"sshd did not start: {self.log_tail()}") from None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10, [])
            self.proc = None

    def log_tail(self) -> str:
        return log_tail(self.log_path)
