"""A real `serve` run seen as an operator sees it: the JSON log, a Prometheus scrape of
its operations listener, `/healthz`, `/readyz` and `qprserver status`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from qprserver.config import DatabaseSettings, load_config
from qprserver.db.engine import Database
from qprserver.db.models import LoginSession
from qprserver.observability import logs
from tests.functional.conftest import Instance, write_config
from tests.functional.harness import (
    EXAMPLE,
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Running,
    Server,
    kill_group,
    pdf_bytes,
    provision,
    serve_process,
    wait_listening,
)
from tests.functional.smtp import free_port

PASSWORD = "Geheim-Passwort-4711!"
WRONG_PASSWORD = "Falsch-Passwort-0815!"
# A marker inside the uploaded document: its content must never reach the log.
CONTENT_SEED = b"inhalt-der-pruefung"
TRANSFER_EVENTS = ("login.", "upload.", "download.", "delivery.")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Observed:
    """A running `serve` with its log file and its operations listener."""

    run: Running
    instance: Instance
    log: Path
    metrics_port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    async def get(self, path: str) -> tuple[int, bytes]:
        def fetch() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(self.url(path), timeout=20) as answer:
                    return int(answer.status), answer.read()
            except urllib.error.HTTPError as exc:
                return int(exc.code), exc.read()

        return await asyncio.to_thread(fetch)

    async def scrape(self) -> Samples:
        status, body = await self.get("/metrics")
        assert status == 200
        samples: Samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def events(self) -> list[dict[str, object]]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def until_logged(self, event: str, count: int = 1) -> None:
        for _ in range(400):
            if sum(1 for e in self.events() if e["event"] == event) >= count:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{event} was not logged {count} time(s)")

    async def until_ready(self) -> None:
        """Until /readyz says ready; with workers another process may answer SSH first,
        before the first one listens here."""
        for _ in range(600):
            with contextlib.suppress(urllib.error.URLError):
                if (await self.get("/readyz"))[0] == 200:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("never ready")


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextlib.asynccontextmanager
async def observed_serve(
    root: Path, database: DatabaseSettings, server_extra: str = ""
) -> AsyncIterator[Observed]:
    """`serve` with JSON logs to a file and its operations listener on a free port."""
    port, metrics_port = free_port(), free_port()
    config = write_config(root, database)
    example = EXAMPLE.read_text(encoding="utf-8")
    kinds = example[example.index("[kinds.") :]
    config.write_text(
        config.read_text().replace("port = 0\n", f"port = {port}\n{server_extra}", 1)
        + f'[logging]\nformat = "json"\n[metrics]\nenabled = true\nport = {metrics_port}\n'
        + kinds
    )
    instance = Instance(root, config)
    instance.ok("init")
    log = root / "serve.log"
    with log.open("wb") as out:
        run = Running(await serve_process(config, stderr=out.fileno()), port, config)
    try:
        await provision(run)
        await wait_listening(run)
        yield Observed(run, instance, log, metrics_port)
    finally:
        await kill_group(run.proc)


@pytest.fixture
async def observed(tmp_path: Path, database_settings: DatabaseSettings) -> AsyncIterator[Observed]:
    async with observed_serve(tmp_path, database_settings) as obs:
        yield obs


async def _upload(obs: Observed, name: str, data: bytes) -> None:
    async with (
        obs.run.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as f,
    ):
        await f.write(data)


async def test_one_run_logs_each_event_once_in_order_and_the_scrape_counts_them(
    observed: Observed,
) -> None:
    obs = observed
    obs.instance.ok("account", "password", MD_NW, stdin=PASSWORD + "\n")
    await obs.until_ready()
    status, health = await obs.get("/healthz")
    assert (status, json.loads(health)) == (200, {"status": "alive"})
    assert (await obs.get("/nothing"))[0] == 404
    report = obs.instance.json("status")
    assert report == {
        "status": "ready",
        "checks": {"database": "ok", "storage": "ok", "scheduler": "ok"},
    }
    before = await obs.scrape()

    # A failed login, an accepted and a rejected upload, a download, an acknowledgement.
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            obs.run.port,
            username=MD_NW,
            password=WRONG_PASSWORD,
            client_keys=None,
            agent_path=None,
            known_hosts=None,
        )
    await obs.until_logged("login.failed")
    name = f"{FACILITY_NW}_bericht.pdf"
    document = pdf_bytes(30_000, seed=CONTENT_SEED)
    await _upload(obs, name, document)
    with pytest.raises(asyncssh.SFTPFailure):
        await _upload(obs, f"{FACILITY_NW}_kaputt.pdf", b"kein PDF " + CONTENT_SEED)
    async with obs.run.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(f"/inbox/{name}", "rb") as f:
            assert await f.read() == document
        await obs.until_logged("download.complete")
        await sftp.remove(f"/inbox/{name}")
    await obs.until_logged("delivery.acknowledged")
    after = await obs.scrape()

    events = [e for e in obs.events() if str(e["event"]).startswith(TRANSFER_EVENTS)]
    assert [(e["event"], e.get("account")) for e in events] == [
        ("login.failed", MD_NW),
        ("login.ok", MD_NW),
        ("upload.accepted", MD_NW),
        ("login.ok", MD_NW),
        ("upload.rejected", MD_NW),
        ("login.ok", LV_NW),
        ("download.complete", LV_NW),
        ("delivery.acknowledged", LV_NW),
    ]
    failed, md_login, accepted, md_again, rejected, lv_login, download, ack = events
    assert failed["method"] == "password" and failed["reason"] == "wrong-password"
    assert failed["channel"] == "sftp" and failed["address"] == "127.0.0.1"
    assert md_login["method"] == "publickey"
    assert accepted["session"] == md_login["session"] != md_again["session"]
    assert accepted["request"] and accepted["kind"] == "pruefbericht"
    assert (accepted["name"], accepted["size"], accepted["recipients"]) == (
        name,
        len(document),
        [LV_NW],
    )
    assert isinstance(accepted["elapsed_ms"], int)
    assert rejected["session"] == md_again["session"]
    assert rejected["reasons"] and rejected["kind"] == "pruefbericht"
    assert download["session"] == lv_login["session"] == ack["session"]
    assert (download["document"], download["bytes"], download["channel"]) == (
        name,
        len(document),
        "sftp",
    )
    assert download["sha256"] == accepted["sha256"] == ack["sha256"]
    assert download["request"] != ack["request"]

    # The catch-up at start ran the weekly jobs: one job.run each, counted.
    runs = {e["job"]: e for e in obs.events() if e["event"] == "job.run"}
    assert runs["retention"]["result"] == "ok"
    assert value(after, "qpr_job_runs_total", job="retention", result="ok") == 1
    assert value(after, "qpr_job_duration_seconds_count", job="retention") == 1

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert delta("qpr_logins_total", channel="sftp", method="password", result="failed") == 1
    assert delta("qpr_logins_total", channel="sftp", method="publickey", result="ok") == 3
    assert delta("qpr_uploads_total", kind="pruefbericht", result="accepted") == 1
    assert delta("qpr_uploads_total", kind="pruefbericht", result="rejected") == 1
    assert delta("qpr_upload_bytes_total") == len(document)
    assert delta("qpr_downloads_total", channel="sftp") == 1
    assert delta("qpr_download_bytes_total", channel="sftp") == len(document)
    assert delta("qpr_transfer_seconds_count", direction="upload") == 1
    assert delta("qpr_transfer_seconds_count", direction="download") == 1
    assert value(after, "qpr_storage_bytes") == len(document)
    assert value(after, "qpr_bans_active") == 0
    assert value(after, "qpr_outbox_messages", status="dead") == 0
    assert value(after, "qpr_build_info", version="0.1.0") == 1

    # Nothing secret in the whole log: passwords, their hash, keys, document content.
    text = obs.log.read_text(encoding="utf-8")
    settings = load_config(obs.run.config)
    secrets = [PASSWORD, WRONG_PASSWORD, "$argon2", CONTENT_SEED.decode()]
    secrets += [settings.security.audit_key.read_text().strip()]
    secrets += [settings.security.totp_key.read_text().strip()]
    secrets += [key.export_private_key().decode().splitlines()[1] for key in obs.run.keys.values()]
    assert [s for s in secrets if s in text] == []


@pytest.mark.once
async def test_two_workers_are_scraped_as_one_sum(
    tmp_path: Path, database_settings: DatabaseSettings
) -> None:
    async with observed_serve(tmp_path, database_settings, "workers = 2\n") as obs:
        await obs.until_ready()
        before = await obs.scrape()
        db = Database(load_config(obs.run.config).database)
        async with contextlib.AsyncExitStack() as stack:
            # Connections until both workers hold sessions (the one with fewer takes the next).
            for opened in range(1, 41):
                await stack.enter_async_context(obs.run.connect(LV_NW))
                async with db.read_session() as session:
                    counted = (
                        await session.execute(
                            select(LoginSession.node_id, func.count(LoginSession.id)).group_by(
                                LoginSession.node_id
                            )
                        )
                    ).all()
                if len(counted) == 2 and sum(n for _, n in counted) == opened:
                    break
            await db.dispose()
            assert len(counted) == 2, "every connection went to one worker"
            during = await obs.scrape()
        assert value(during, "qpr_sessions_active", channel="sftp") == opened
        ok = {"channel": "sftp", "method": "publickey", "result": "ok"}
        assert value(during, "qpr_logins_total", **ok) - value(
            before, "qpr_logins_total", **ok
        ) == (opened)
        assert value(during, "qpr_build_info", version="0.1.0") == 1


async def test_serve_tells_systemd_ready_then_watchdog_and_status_then_stopping(
    tmp_path: Path, database_settings: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "1000000")
        loop = asyncio.get_running_loop()

        async def message() -> bytes:
            return await asyncio.wait_for(loop.sock_recv(sock, 4096), 60)

        async with observed_serve(tmp_path, database_settings) as obs:
            ready = await message()
            assert ready == f"READY=1\nSTATUS=listening on port {obs.run.port}".encode()
            # Answering at once: the operations listener was up before READY=1.
            assert (await obs.get("/healthz"))[0] == 200
            got = [await message() for _ in range(3)]
            assert got[0] == b"WATCHDOG=1"
            assert got[1] == b"STATUS=0 session(s), 0 mail(s) queued"
            assert got[2] == b"WATCHDOG=1"
            obs.run.proc.send_signal(signal.SIGTERM)
            while (last := await message()) != b"STOPPING=1":
                assert last.startswith((b"WATCHDOG=1", b"STATUS="))
            assert await asyncio.wait_for(obs.run.proc.wait(), 60) == 0


def test_status_says_when_the_operations_listener_is_off(instance: Instance) -> None:
    assert "[metrics] enabled = true" in instance.fails("status")


def test_jobs_run_by_hand_tells_a_refused_mail_on_stderr(instance: Instance) -> None:
    closed = free_port()  # nothing listens there: the relay refuses
    with instance.config.open("a", encoding="utf-8") as config:
        config.write(f"[mail]\nsmtp_port = {closed}\nmax_attempts = 3\n")
    instance.ok(
        "account", "add", LV_NW, "--name", "LV NW", "--email", "lv@example.org",
        "--role", "recipient",
    )  # fmt: skip
    done = instance.run("jobs", "run", "mail-send", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == {"sent": 0, "failed": 1, "dead": 0}
    (told,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert (told["event"], told["level"], told["attempts"]) == ("mail.failed", "warning", 1)
    assert str(closed) in told["error"]


async def test_refused_logins_bans_and_refused_connections_are_told_with_their_reason(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    local = ("127.0.0.3", 0)  # Linux answers all of 127.0.0.0/8 on loopback
    threshold = server.settings.security.ban_threshold
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def login(user: str, **how: Any) -> None:
        with pytest.raises((OSError, asyncssh.Error)):
            await asyncssh.connect(
                "127.0.0.1", server.port, username=user, known_hosts=None, agent_path=None, **how
            )

    with caplog.at_level(logging.INFO, logger="qprserver.events"):
        await login(LV_NW, client_keys=[stranger])
        await login("gast", client_keys=[stranger])
        for _ in range(threshold):
            await login(FACILITY_NW, password=WRONG_PASSWORD, client_keys=None, local_addr=local)
        # The right key, but from the banned address: dropped before the SSH banner.
        await login(LV_NW, client_keys=[server.keys[LV_NW]], local_addr=local)
        await server.settled()
    told = [(r.getMessage(), getattr(r, logs.FIELDS)) for r in caplog.records]
    failed = [(f["account"], f["method"], f["reason"]) for e, f in told if e == "login.failed"]
    assert failed == [
        (LV_NW, "publickey", "wrong-key"),
        (None, "publickey", "unknown"),
        *[(FACILITY_NW, "password", "wrong-password")] * threshold,
    ]
    assert [f["key"] for e, f in told if e == "ban.set"] == [
        f"addr:{local[0]}",
        f"account:{FACILITY_NW}",
    ]
    refused = [(f["address"], f["reason"]) for e, f in told if e == "connection.refused"]
    assert refused == [(local[0], "banned")]
    assert WRONG_PASSWORD not in caplog.text
