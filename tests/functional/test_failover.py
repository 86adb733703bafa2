"""The failover proof: two ``serve`` nodes behind HAProxy (TCP mode) on PostgreSQL and
S3 (SeaweedFS). Twenty clients upload and download through the balancer; one node is
killed with SIGKILL while every transfer is halfway; the clients reconnect through the
balancer to the other node, downloads go on where they stopped (``reget``) and uploads
cut off are sent again. Afterwards: no acknowledged upload lost, no partial document
visible, every receipt once, the weekly bundle once, no mail twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import Select, func, select

from qprserver.accounts import service as accounts
from qprserver.clock import SystemClock
from qprserver.config import DatabaseSettings, load_config
from qprserver.db.engine import Database
from qprserver.db.models import (
    Bundle,
    Delivery,
    Document,
    DownloadCoverage,
    DownloadReceipt,
    MailMessage,
)
from qprserver.exchange import routing
from qprserver.notify.outbox import LEASE as OUTBOX_LEASE
from qprserver.notify.outbox import Notifier
from tests.conftest import BACKEND
from tests.functional.conftest import Instance
from tests.functional.harness import (
    ADMIN,
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Running,
    kill_group,
    pdf_bytes,
    serve_process,
    wait_listening,
)
from tests.functional.smtp import SmtpServer, free_port
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3

pytestmark = [
    pytest.mark.once,
    pytest.mark.skipif(BACKEND != "postgresql", reason="several nodes need PostgreSQL"),
]

CLIENTS = 20  # half upload, half download
SIZE = 2 * 1024 * 1024
HALF = SIZE // 2
ATTEMPTS = 5


def _node_config(
    root: Path, name: str, port: int, db: DatabaseSettings, s3: SeaweedS3, smtp: int
) -> Path:
    schema = f'schema = "{db.schema_name}"\n' if db.schema_name else ""
    config = root / f"{name}.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nnode_id = "{name}"\n'
        'host_keys = ["keys/ssh_host_ed25519_key"]\nshutdown_grace = 2.0\n'
        f'[storage]\ndata_dir = "data-{name}"\nbackend = "s3"\nendpoint = "{s3.endpoint}"\n'
        f'bucket = "{BUCKET}"\nprefix = "failover-{root.name}/"\n'
        'credentials_file = "keys/s3.toml"\n'
        f'[database]\nurl = "{db.url}"\n{schema}'
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {smtp}\n'
        "[jobs]\nsend_interval = 5\n",
        encoding="utf-8",
    )
    return config


HAPROXY = """\
global
    maxconn 256
defaults
    mode tcp
    timeout connect 1s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch
frontend sftp
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance roundrobin
    server sftp1 127.0.0.1:{one} check inter 200ms fall 1 rise 2
    server sftp2 127.0.0.1:{two} check inter 200ms fall 1 rise 2
"""


@dataclass
class Cluster:
    """Two nodes, the balancer, and the clients' view (``front``: through HAProxy)."""

    root: Path
    nodes: list[Running]
    front: Running
    db: Database
    smtp: SmtpServer
    balancer: asyncio.subprocess.Process
    killed: asyncio.Event = field(default_factory=asyncio.Event)


async def _provision(db: Database, front: Running) -> None:
    notifier = Notifier(load_config(front.config).mail)
    now = SystemClock().now()
    async with db.session() as session:
        for ik, role, email in (
            (MD_NW, "depositor", "md@example.org"),
            (LV_NW, "recipient", "lv@example.org"),
        ):
            key = asyncssh.generate_private_key("ssh-ed25519")
            await accounts.add_account(
                session, ADMIN, now, ik=ik, name=ik, email=email, roles=[role], notifier=notifier
            )
            await accounts.add_key(
                session, ADMIN, now, ik, key.export_public_key().decode().strip(), notifier
            )
            front.keys[ik] = key
        await accounts.update_account(session, ADMIN, now, LV_NW, bundles=True)
        await routing.add_route(
            session, ADMIN, now, kind="pruefbericht", land="NW", recipient=LV_NW
        )


async def _until(condition: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    """Ask the database until condition holds: another process's progress has no event."""
    for _ in range(int(within / 0.2)):  # bounded
        if await condition():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def cluster(
    tmp_path: Path, database_settings: DatabaseSettings, s3_server: SeaweedS3
) -> AsyncIterator[Cluster]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    smtp = SmtpServer()
    smtp.start()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "s3.toml").write_text(
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\n', encoding="utf-8"
    )
    ports = [free_port(), free_port()]
    configs = [
        _node_config(tmp_path, f"sftp{i + 1}", port, database_settings, s3_server, smtp.port)
        for i, port in enumerate(ports)
    ]
    for config in configs:
        Instance(tmp_path, config).ok("init")
    front_port = free_port()
    (tmp_path / "haproxy.cfg").write_text(
        HAPROXY.format(port=front_port, one=ports[0], two=ports[1]), encoding="utf-8"
    )
    balancer = await asyncio.create_subprocess_exec(
        haproxy, "-f", str(tmp_path / "haproxy.cfg"), "-db",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    db = Database(database_settings)
    nodes = [Running(await serve_process(c), p, c) for c, p in zip(configs, ports, strict=True)]
    try:
        for node in nodes:
            await wait_listening(node)
        front = Running(nodes[0].proc, front_port, configs[0])
        await wait_listening(front)
        await _provision(db, front)
        yield Cluster(tmp_path, nodes, front, db, smtp, balancer)
    finally:
        for node in nodes:
            await kill_group(node.proc)
        balancer.terminate()
        await balancer.wait()
        await db.dispose()
        smtp.stop()


async def _put(front: Running, name: str, data: bytes) -> None:
    async with (
        front.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as f,
    ):
        await f.write(data)


@dataclass
class Tally:
    """What the clients saw: acknowledged uploads, downloads, reconnects."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # name → SHA-256
    downloaded: dict[str, str] = field(default_factory=dict)
    reconnects: int = 0


async def _upload(cluster: Cluster, halfway: asyncio.Queue[str], name: str, tally: Tally) -> None:
    data = pdf_bytes(SIZE, seed=name.encode())
    for attempt in range(ATTEMPTS):
        try:
            async with cluster.front.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
                f = await sftp.open(f"/outbox/{name}", "wb")
                await f.write(data[:HALF])
                if attempt == 0:
                    await halfway.put(name)
                    await cluster.killed.wait()
                await f.write(data[HALF:], HALF)
                await f.close()  # the server's answer to this close is the acknowledgement
            tally.acknowledged[name] = hashlib.sha256(data).hexdigest()
            return
        except (OSError, asyncssh.Error):
            tally.reconnects += 1  # cut off with its node: sent again from the start
    raise AssertionError(f"upload {name} failed {ATTEMPTS} times")


async def _download(
    cluster: Cluster, halfway: asyncio.Queue[str], name: str, expected: bytes, tally: Tally
) -> None:
    got = bytearray()
    for _ in range(ATTEMPTS):
        try:
            async with (
                cluster.front.connect(LV_NW) as conn,
                conn.start_sftp_client() as sftp,
                sftp.open(f"/inbox/{name}", "rb") as f,
            ):
                if not got:
                    got += await f.read(HALF, 0)
                    await halfway.put(name)
                    await cluster.killed.wait()
                while len(got) < len(expected):  # reget: on from what is here
                    got += await f.read(256 * 1024, len(got))
            assert bytes(got) == expected
            tally.downloaded[name] = hashlib.sha256(got).hexdigest()
            return
        except (OSError, asyncssh.Error):
            tally.reconnects += 1
    raise AssertionError(f"download {name} failed {ATTEMPTS} times")


async def _count(db: Database, query: Select[tuple[int]]) -> int:
    async with db.read_session() as session:
        return int(await session.scalar(query) or 0)


async def test_killing_a_node_mid_transfer_loses_nothing_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    db = cluster.db
    half = CLIENTS // 2
    existing = {
        f"{FACILITY_NW}_alt_{i:02d}.pdf": pdf_bytes(SIZE, seed=b"alt%d" % i) for i in range(half)
    }
    for name, data in existing.items():
        await _put(cluster.front, name, data)
    new_names = [f"{FACILITY_NW}_neu_{i:02d}.pdf" for i in range(half)]

    tally = Tally()
    halfway: asyncio.Queue[str] = asyncio.Queue()
    clients = [asyncio.create_task(_upload(cluster, halfway, n, tally)) for n in new_names] + [
        asyncio.create_task(_download(cluster, halfway, n, d, tally)) for n, d in existing.items()
    ]
    for _ in range(CLIENTS):
        await asyncio.wait_for(halfway.get(), 120)
    # Every download's first half is checkpointed on its node before the kill.
    await _until(lambda: _coverage_rows(db, half), "the served halves to be checkpointed")
    await kill_group(cluster.nodes[0].proc)
    cluster.killed.set()
    await asyncio.wait_for(asyncio.gather(*clients), 300)

    # 0 acknowledged uploads lost, 0 partial documents visible.
    async with db.read_session() as session:
        documents = (
            await session.execute(select(Document.name, Document.sha256, Document.size))
        ).all()
    everything = {
        **{n: hashlib.sha256(d).hexdigest() for n, d in existing.items()},
        **tally.acknowledged,
    }
    assert sorted(tally.acknowledged) == sorted(new_names)
    assert sorted((name, sha) for name, sha, _ in documents) == sorted(everything.items())
    assert all(size == len(pdf_bytes(SIZE)) for _, _, size in documents)
    assert tally.reconnects > 0  # some clients really were on the killed node

    # Every download made exactly one receipt.
    async def receipts_in() -> bool:
        return await _count(db, select(func.count()).select_from(DownloadReceipt)) >= half

    await _until(receipts_in, "the receipts of the resumed downloads")
    async with db.read_session() as session:
        per_delivery = (
            await session.execute(
                select(Delivery.name, func.count(DownloadReceipt.id))
                .join(DownloadReceipt, DownloadReceipt.delivery_id == Delivery.id)
                .group_by(Delivery.name)
            )
        ).all()
    assert sorted(per_delivery) == sorted((name, 1) for name in existing)

    # The weekly bundle once, though both a node's scheduler and two operators ask.
    config = cluster.nodes[1].config
    today = SystemClock().now().date()
    monday = today + timedelta(days=7 - today.weekday())  # its week before holds today
    args = ["-m", "qprserver", "--config", str(config), "jobs", "run", "bundles"]
    runs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            "--at",
            f"{monday}T02:30",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for run in runs:
        _, err = await asyncio.wait_for(run.communicate(), 120)
        assert run.returncode == 0, err.decode()
    assert await _count(db, select(func.count()).select_from(Bundle)) == 1

    # No mail twice: the outbox drained by the surviving node and an operator at once.
    Instance(cluster.root, config).ok("jobs", "run", "mail-send")

    async def only_claimed_left() -> bool:
        query = select(func.count()).select_from(MailMessage)
        due = (MailMessage.status == "queued") & (
            MailMessage.next_attempt_at <= SystemClock().now()
        )
        return await _count(db, query.where(due)) == 0

    await _until(only_claimed_left, "the mail outbox to drain")
    # What the killed node had claimed waits for its lease, the bundle's mail for the
    # Monday of --at: a run after both sends those.
    claimed = await _count(
        db, select(func.count()).select_from(MailMessage).where(MailMessage.status == "sending")
    )
    later = max(SystemClock().now() + OUTBOX_LEASE, datetime.fromisoformat(f"{monday}T02:30+01:00"))
    later += timedelta(minutes=1)
    Instance(cluster.root, config).ok("jobs", "run", "mail-send", "--at", later.isoformat())
    rows = await _count(db, select(func.count()).select_from(MailMessage))
    sent = await _count(
        db, select(func.count()).select_from(MailMessage).where(MailMessage.status == "sent")
    )
    ids = [m["Message-ID"] for m in cluster.smtp.collector.messages]
    assert sent == rows > 0 and len(set(ids)) == rows
    # A claimed mail may have reached the relay just before its node died: sent again,
    # it carries the same Message-ID, which mail systems take as one message.
    assert len(ids) - rows <= claimed
    print(
        f"\nfailover: {len(tally.acknowledged)} uploads acknowledged, 0 lost; "
        f"{len(documents)} documents, 0 partial; {len(per_delivery)} receipts, each once; "
        f"{tally.reconnects} reconnects; {rows} mails, each Message-ID once "
        f"({claimed} claimed by the killed node, {len(ids) - rows} resent)"
    )


async def _coverage_rows(db: Database, want: int) -> bool:
    count = await _count(db, select(func.count()).select_from(DownloadCoverage))
    return count >= want
