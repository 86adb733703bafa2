"""The shipped example config and the minimal config of the design start and work as
they are, and `serve` names every Qb-R file it cannot use when it starts."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import httpx
import pytest

from qprserver.config import DatabaseSettings, load_config
from tests.functional.conftest import Instance
from tests.functional.harness import EXAMPLE, FACILITY_NW, LV_NW, MD_NW, pdf_bytes
from tests.functional.smtp import free_port

# DESIGN.md §4: "this minimal file is a working instance" (port and database filled in).
MINIMAL = """\
[server]
host = "127.0.0.1"
port = {port}
host_keys = ["keys/ssh_host_ed25519_key"]

[storage]
data_dir = "var/data"

[database]
url = "{url}"
{schema}
[mail]
smtp_host = "127.0.0.1"
smtp_port = 8025
sender = "qpr-portal@example.org"
"""


class Serving:
    """A `qprserver serve` process whose log lines are kept."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.log: list[str] = []

    async def until(self, text: str) -> None:
        """Read log lines until one contains text; fail if the process ends first."""
        assert self.proc.stderr is not None
        while not any(text in line for line in self.log):
            line = await asyncio.wait_for(self.proc.stderr.readline(), 60)
            if not line:
                raise AssertionError("serve ended early:\n" + "".join(self.log))
            self.log.append(line.decode(errors="replace"))

    def problems(self) -> list[str]:
        """Log lines at warning or above or with a traceback (serve logs JSON to a
        pipe), and any line that is no JSON at all (what a crash prints)."""
        found = []
        for line in filter(str.strip, self.log):
            try:
                event = json.loads(line)
            except ValueError:
                found.append(line)
                continue
            if event.get("level") in ("warning", "error", "critical") or "exception" in event:
                found.append(line)
        return found


@asynccontextmanager
async def serving(config: Path, port: int) -> AsyncIterator[Serving]:
    """`qprserver serve` with config until it listens; SIGTERM and the rest of its log after."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qprserver", "--config", str(config), "serve",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    run = Serving(proc, port)
    try:
        await run.until("listening on")
        yield run
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        run.log.extend(rest.decode(errors="replace").splitlines(keepends=True))
        assert await asyncio.wait_for(proc.wait(), 60) == 0, "".join(run.log)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _shipped_copy(tmp_path: Path, port: int, web_port: int = 0) -> Path:
    """The example config as shipped, in a copy of the repository's layout, on free ports."""
    folder = tmp_path / "config"
    folder.mkdir()
    config = folder / "qprserver.toml"
    text = EXAMPLE.read_text(encoding="utf-8")
    assert text.count("\nport = 2222\n") == 1 and text.count("\nport = 8443\n") == 1
    text = text.replace("\nport = 2222\n", f"\nport = {port}\n")
    config.write_text(text.replace("\nport = 8443\n", f"\nport = {web_port}\n"), encoding="utf-8")
    return config


async def test_the_shipped_example_config_initialises_and_serves_without_a_warning(
    tmp_path: Path,
) -> None:
    port, web_port = free_port(), free_port()
    config = _shipped_copy(tmp_path, port, web_port)
    made = Instance(tmp_path, config).ok("init")
    assert "self-signed web certificate created for local use" in made
    settings = load_config(config)
    assert settings.web.tls_cert is not None and settings.web.tls_key is not None
    paths = [
        settings.web.tls_cert,
        settings.web.tls_key,
        *settings.server.host_keys,
        settings.storage.data_dir,
        settings.security.totp_key,
        *settings.qb.schemas.values(),
        *settings.qb.rules.values(),
    ]
    assert [p for p in paths if not p.exists()] == []
    # Years configured only where they can be checked (else every report is refused).
    assert set(settings.qb.years) <= set(settings.qb.schemas)
    async with serving(config, port) as run:
        # A client gets as far as authentication: the host keys init made are served.
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1", port, username=MD_NW, password="falsch", known_hosts=None
            )
        # The portal answers over HTTPS with the certificate init made.
        trust = ssl.create_default_context(cafile=str(settings.web.tls_cert))
        async with httpx.AsyncClient(verify=trust) as client:
            page = await client.get(f"https://127.0.0.1:{web_port}/anmelden")
        assert page.status_code == 200 and "Anmelden" in page.text
    # The refused login above is logged as a warning event; nothing else may be.
    unexpected = [line for line in run.problems() if '"event": "login.failed"' not in line]
    assert unexpected == [], "".join(run.log)


def _write_minimal(tmp_path: Path, database: DatabaseSettings, port: int) -> Path:
    config = tmp_path / "qprserver.toml"
    url = database.url
    if url.startswith("sqlite"):
        url = "sqlite+aiosqlite:///var/qprserver.db"  # as in the design, relative
    schema = f'schema = "{database.schema_name}"\n' if database.schema_name else ""
    config.write_text(MINIMAL.format(port=port, url=url, schema=schema), encoding="utf-8")
    return config


async def test_the_minimal_config_routes_a_pruefbericht_by_the_standard_kinds(
    tmp_path: Path, database_settings: DatabaseSettings
) -> None:
    port = free_port()
    inst = Instance(tmp_path, _write_minimal(tmp_path, database_settings, port))
    inst.ok("init")
    keys = {}
    for ik, role in ((MD_NW, "depositor"), (LV_NW, "recipient")):
        inst.ok("account", "add", ik, "--name", f"Konto {ik}", "--role", role)
        keys[ik] = asyncssh.generate_private_key("ssh-ed25519")
        inst.ok("account", "key", "add", ik, "-", stdin=keys[ik].export_public_key().decode())
    inst.ok("route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_NW)
    name = f"{FACILITY_NW}_pruefbericht_2026.pdf"
    data = pdf_bytes()
    async with serving(inst.config, port):
        options = {"known_hosts": None}
        async with (
            asyncssh.connect(
                "127.0.0.1", port, username=MD_NW, client_keys=[keys[MD_NW]], **options
            ) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(f"/outbox/{name}", "wb") as f,
        ):
            await f.write(data)
        async with (
            asyncssh.connect(
                "127.0.0.1", port, username=LV_NW, client_keys=[keys[LV_NW]], **options
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            assert [n for n in await sftp.listdir("/inbox") if n not in (".", "..")] == [name]
            async with sftp.open(f"/inbox/{name}", "rb") as f:
                assert await f.read() == data


async def test_serve_warns_at_start_about_each_qb_file_it_cannot_use(
    tmp_path: Path, database_settings: DatabaseSettings
) -> None:
    port = free_port()
    config = _write_minimal(tmp_path, database_settings, port)
    (tmp_path / "broken.sch").write_text("<kein-schematron", encoding="utf-8")
    shutil.copy(config, tmp_path / "plain.toml")
    config.write_text(
        config.read_text(encoding="utf-8")
        + '[qb.schemas]\n2024 = "fehlt/qb-2024.xsd"\n'
        + '[qb.rules]\n2024 = "broken.sch"\n'
        + "[qb.years.2025]\nhospital = { start = 2026-10-15, end = 2026-11-15 }\n",
        encoding="utf-8",
    )
    Instance(tmp_path, config).ok("init")
    async with serving(config, port) as run:
        pass  # start-up alone writes the warnings; serve is stopped on leaving
    warnings = run.problems()
    assert len(warnings) == 3, "".join(run.log)
    schema, rules, years = warnings
    assert json.loads(schema)["event"] == "config.warning"
    assert '"level": "warning"' in schema and "qb.schemas.2024: " in schema
    assert "fehlt/qb-2024.xsd" in schema
    assert "qb.rules.2024: " in rules and "broken.sch" in rules
    assert "qb.years.2025: no schema for report year 2025" in years
    assert not any(line.startswith("Traceback") for line in run.log)
