"""A real qprserver SFTP server on port 0 inside the test's event loop, and clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
from sqlalchemy import select

from qprserver.accounts import service as accounts
from qprserver.accounts.enums import RegistrationState
from qprserver.audit.chain import Actor
from qprserver.clock import FixedClock, SystemClock
from qprserver.config import Settings, load_config, parse_config
from qprserver.db.engine import Database
from qprserver.db.models import Document, MailMessage, QbRegistration
from qprserver.exchange import routing
from qprserver.ik import check_digit
from qprserver.notify.outbox import Notifier
from qprserver.notify.qb_mails import QB_CONFIRM_PATH
from qprserver.qb import registrations as qb_registrations
from qprserver.security.hostkeys import ensure_host_key
from qprserver.security.totp import ensure_key
from qprserver.service import build_context
from qprserver.sftp.server import SFTPListener

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "qprserver.example.toml"
ADMIN = Actor("test", "local")

# Inspection body (depositor), Landesverband NW (recipient), a care facility in NW
# (recipient), a second Landesverband in BY, and a hospital.
MD_NW = "190500027"
LV_NW = "180500016"
FACILITY_NW = "510512349"
LV_BY = "180900032"
FACILITY_BY = "510911115"


def pdf_bytes(size: int = 20_000, seed: bytes = b"x") -> bytes:
    """A PDF-shaped file: header, filler, trailer."""
    filler = (hashlib.sha256(seed).hexdigest().encode() * (size // 64 + 1))[: max(0, size - 20)]
    return b"%PDF-1.7\n" + filler + b"\n%%EOF\n"


class _Puts:
    """``put``: one upload over SFTP (asyncssh) for anything that can ``connect``."""

    def connect(self, ik: str) -> Any:
        raise NotImplementedError

    async def put(self, ik: str, path: str, data: bytes) -> None:
        """Upload ``data`` to ``path`` as ``ik`` and close it."""
        async with (
            self.connect(ik) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(path, "wb") as f,
        ):
            await f.write(data)


@dataclass
class Server(_Puts):
    """A running server plus what tests need to drive it."""

    root: Path
    settings: Settings
    db: Database
    listener: SFTPListener
    keys: dict[str, asyncssh.SSHKey] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def notifier(self) -> Notifier:
        """The server's own notifier, for domain calls a test makes on its behalf."""
        return self.listener.ctx.uploads.notifier

    async def add_account(
        self, ik: str, roles: Sequence[str], *, name: str = "", email: str | None = None
    ) -> asyncssh.SSHKey:
        key = asyncssh.generate_private_key("ssh-ed25519")
        now = SystemClock().now()
        async with self.db.session() as session:
            await accounts.add_account(
                session,
                ADMIN,
                now,
                ik=ik,
                name=name or f"Konto {ik}",
                email=email,
                roles=roles,
                notifier=self.notifier,
            )
            await accounts.add_key(
                session, ADMIN, now, ik, key.export_public_key().decode().strip(), self.notifier
            )
        self.keys[ik] = key
        key_path = self.root / f"id_{ik}"
        key.write_private_key(key_path)
        os.chmod(key_path, 0o600)
        return key

    async def add_route(self, kind: str, land: str, recipient: str) -> None:
        async with self.db.session() as session:
            await routing.add_route(
                session, ADMIN, SystemClock().now(), kind=kind, land=land, recipient=recipient
            )

    def connect(self, ik: str, **kw: Any) -> Any:
        options: dict[str, Any] = {"known_hosts": None, **kw}
        if "client_keys" not in options:
            options["client_keys"] = [self.keys[ik]]
        return asyncssh.connect("127.0.0.1", self.port, username=ik, **options)

    def key_path(self, ik: str) -> Path:
        return self.root / f"id_{ik}"

    def openssh_args(self, ik: str) -> list[str]:
        return [
            "-i",
            str(self.key_path(ik)),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ]

    async def sftp_batch(
        self, ik: str, commands: str, cwd: Path, *options: str
    ) -> tuple[int, str, str]:
        """Run OpenSSH ``sftp -b -`` (with options) with commands; (exit code, stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            "sftp",
            *self.openssh_args(ik),
            *options,
            "-P",
            str(self.port),
            "-b",
            "-",
            f"{ik}@127.0.0.1",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
        )
        out, err = await asyncio.wait_for(proc.communicate(commands.encode()), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def scp(self, ik: str, *args: str, cwd: Path) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "scp",
            *self.openssh_args(ik),
            "-P",
            str(self.port),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def settled(self) -> None:
        """Wait for the work the server runs beside its sessions (keeping cut-off uploads)."""
        while self.listener._tasks:
            await asyncio.gather(*self.listener._tasks, return_exceptions=True)

    def temp_files(self) -> list[Path]:
        """This node's spool: uploads in progress and kept partial uploads."""
        spool = self.settings.storage.data_dir / "spool" / self.settings.server.node_id
        return list(spool.iterdir())


def make_settings(root: Path, database_url: str, schema: str, **storage: Any) -> Settings:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "host_keys": ["keys/ssh_host_ed25519_key"],
            "idle_timeout": 300.0,
            "shutdown_grace": 2.0,
        },
        "storage": {"data_dir": "data", **storage},
        "database": {"url": database_url, "schema": schema},
        "kinds": example["kinds"],
    }
    settings = parse_config(data, root / "qprserver.toml")
    for path in settings.server.host_keys:
        ensure_host_key(path)
    ensure_key(settings.security.totp_key)
    return settings


async def start_server(settings: Settings, db: Database, root: Path) -> Server:
    listener = SFTPListener(build_context(settings, db, Notifier(settings.mail)))
    await listener.start()
    return Server(root, settings, db, listener)


async def start_sftp(
    server: Server, ik: str, *options: str, cwd: Path
) -> asyncio.subprocess.Process:
    """Start OpenSSH ``sftp -b -`` without waiting; commands go to its stdin."""
    return await asyncio.create_subprocess_exec(
        "sftp",
        *server.openssh_args(ik),
        *options,
        "-P",
        str(server.port),
        "-b",
        "-",
        f"{ik}@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=cwd,
    )


class Running(_Puts):
    """A `qprserver serve` process and keys of its two accounts."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, config: Path) -> None:
        self.proc = proc
        self.port = port
        self.config = config
        self.keys: dict[str, asyncssh.SSHKey] = {}

    def connect(self, ik: str) -> Any:
        return asyncssh.connect(
            "127.0.0.1", self.port, username=ik, client_keys=[self.keys[ik]], known_hosts=None
        )

    async def documents(self) -> list[str]:
        db = Database(load_config(self.config).database)
        try:
            async with db.read_session() as session:
                return list((await session.scalars(select(Document.name))).all())
        finally:
            await db.dispose()


async def provision(run: Running) -> None:
    settings = load_config(run.config)
    db = Database(settings.database)
    notifier = Notifier(settings.mail)
    try:
        async with db.session() as session:
            now = SystemClock().now()
            for ik, role in ((MD_NW, "depositor"), (LV_NW, "recipient")):
                key = asyncssh.generate_private_key("ssh-ed25519")
                await accounts.add_account(
                    session, ADMIN, now, ik=ik, name=ik, email=None, roles=[role], notifier=notifier
                )
                await accounts.add_key(
                    session, ADMIN, now, ik, key.export_public_key().decode().strip(), notifier
                )
                run.keys[ik] = key
            await routing.add_route(
                session, ADMIN, now, kind="pruefbericht", land="NW", recipient=LV_NW
            )
    finally:
        await db.dispose()


async def serve_process(
    config: Path, stderr: int = asyncio.subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """Start `qprserver serve` with a config, in a process group of its own (workers too)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qprserver", "--config", str(config), "serve",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )  # fmt: skip


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a `serve` process and its workers, which would outlive it otherwise."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def wait_listening(run: Running) -> None:
    """Wait until `serve` answers with its SSH banner: the port is bound before the
    start-up work (migrations check, sweeps), so a TCP connect alone proves nothing."""
    for _ in range(400):
        if run.proc.returncode is not None:
            raise AssertionError("server exited early")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", run.port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            banner = await asyncio.wait_for(reader.readline(), 20)
        finally:
            writer.close()
            await writer.wait_closed()
        if banner.startswith(b"SSH-2.0-"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("server did not start listening")


async def download_receipts(server: Server, ik: str) -> int:
    """How many download receipts the account has, once the server's sessions have
    ended (a client may exit before the server has seen its last close) and what they
    read is written."""
    from sqlalchemy import func, select

    from qprserver.db.models import Account, DownloadReceipt

    await asyncio.wait_for(server.listener.ctx.sessions.none_open(), 30)
    await server.listener.ctx.receipts.flush()
    async with server.db.read_session() as session:
        count = await session.scalar(
            select(func.count(DownloadReceipt.id))
            .join(Account, DownloadReceipt.account_id == Account.id)
            .where(Account.ik == ik)
        )
    return int(count or 0)


@contextlib.contextmanager
def paramiko_sftp(server: Server, ik: str) -> Iterator[paramiko.SFTPClient]:
    """A paramiko SFTP client logged in with the account's key, default settings."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=server.port,
        username=ik,
        key_filename=str(server.key_path(ik)),
        look_for_keys=False,
        allow_agent=False,
    )
    try:
        sftp = client.open_sftp()
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        client.close()


async def wait_until_under_way(server: Server, size: int) -> None:
    """Wait until an upload's temp file holds more than 1 MiB but not yet all ``size`` bytes,
    so a client killed now leaves a partial upload behind."""
    grown = 0
    for _ in range(500):  # bounded: until the upload is under way
        files = server.temp_files()
        grown = files[0].stat().st_size if files else 0
        if grown > 1024 * 1024:
            break
        await asyncio.sleep(0.02)
    assert 1024 * 1024 < grown < size, "the upload never got under way"


# The hospital of the real 2019 quality report (../shared/data/qb) and its recipient.
HOSPITAL = "260100023"  # the IK of the real 2019 report, region 01 (SH)
REPORT = "260100023-01-2019-xml.xml"
LV_SH = "10010000" + str(check_digit("10010000"))
IN_WINDOW = datetime(2020, 10, 20, 10, 0, tzinfo=UTC)
# Inside the registration window of report year 2019 (12 Jul – 23 Aug 2020).
REGISTERED_AT = datetime(2020, 7, 20, 10, 0, tzinfo=UTC)


async def start_qb_server(
    tmp_path: Path,
    db: Database,
    schema: Path,
    *,
    year_settings: dict[str, object] | None = None,
    **qb_settings: object,
) -> Server:
    """A server that checks 2019 quality reports (schema, windows), its clock inside the
    hospital window, with a hospital depositor and the Land's recipient routed;
    ``year_settings``: more keys of ``[qb.years.2019]`` (``c1_schema``…)."""
    settings = make_settings(tmp_path, db.settings.url, db.settings.schema_name)
    qb = settings.qb.model_validate(
        {
            **qb_settings,
            "schemas": {"2019": str(schema)},
            "years": {
                "2019": {
                    "hospital": {"start": "2020-10-15", "end": "2020-11-15"},
                    "replacement": {"start": "2020-11-23", "end": "2020-12-15"},
                    **(year_settings or {}),
                }
            },
        }
    )
    settings = settings.model_copy(update={"qb": qb})
    srv = await start_server(settings, db, tmp_path)
    srv.listener.ctx.clock = FixedClock(IN_WINDOW)
    await srv.add_account(HOSPITAL, ["depositor"], email="qb@klinik.example")
    await srv.add_account(LV_SH, ["recipient"], email="lv-sh@example.org")
    await srv.add_route("qualitaetsbericht", "SH", LV_SH)
    await register_report(srv, 2019, HOSPITAL, "01", REGISTERED_AT)
    return srv


async def register_report(
    server: Server, year: int, ik: str, site: str, at: datetime, *, email: str = ""
) -> int:
    """Register a report as a hospital does and confirm it by the link of its mail;
    the registration's id."""
    form = qb_registrations.ReportRegistrationForm(
        year=year,
        ik=ik,
        site=site,
        hospital=f"Klinik {ik}-{site}",
        contact="Frau Muster",
        email=email or f"qb-{ik}-{site}@klinik.example",
        phone="0431 1234-56",
        basis="plankrankenhaus",
    )
    async with server.db.session() as session:
        await qb_registrations.register(
            session,
            at,
            form,
            qb=server.settings.qb,
            settings=server.settings.registration,
            notifier=server.notifier,
            address="127.0.0.1",
        )
    token = await mailed_token(server.db, f"{ik}, Standort {site}", QB_CONFIRM_PATH)
    async with server.db.session() as session:
        confirmed = await qb_registrations.confirm(
            session,
            at,
            token,
            settings=server.settings.registration,
            notifier=server.notifier,
        )
        return confirmed.id


async def mailed_token(db: Database, about: str, path: str) -> str:
    """The token of the newest queued mail whose text names ``about`` and links ``path``."""
    async with db.read_session() as session:
        bodies = (
            await session.scalars(select(MailMessage.body_text).order_by(MailMessage.id.desc()))
        ).all()
    body = next(b for b in bodies if about in b and path in b)
    return body.split(path, 1)[1].split()[0]


def confirmed_registration(
    site: str,
    *,
    year: int = 2019,
    at: datetime = REGISTERED_AT,
    basis: str = "plankrankenhaus",
) -> QbRegistration:
    """A confirmed report registration of HOSPITAL's Standort ``site``, written directly
    (for tests of what comes after the double opt-in)."""
    return QbRegistration(
        year=year,
        ik=HOSPITAL,
        site=site,
        hospital=f"Klinik {site}",
        contact="Frau Muster",
        email=f"qb-{site}@klinik.example",
        phone="0431 1234-56",
        basis=basis,
        further_iks="",
        address="127.0.0.1",
        state=RegistrationState.BESTAETIGT,
        late=False,
        created_at=at,
        confirmed_at=at,
        updated_at=at,
    )


def run_job_in_two_processes(config: Path, job: str, times: Sequence[datetime]) -> list[Any]:
    """``jobs run JOB --at T --json`` in one process per time, all started at once; each
    run's JSON (both must exit 0). Times on different days make the runs of different
    periods, so both do the work."""
    command = [sys.executable, "-m", "qprserver", "--config", str(config)]
    runs = [
        subprocess.Popen(
            [*command, "jobs", "run", job, "--at", at.isoformat(), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for at in times
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0] * len(runs), outputs
    return [json.loads(out) for out, _ in outputs]
