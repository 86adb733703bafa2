"""One node against two behind HAProxy: aggregate throughput of parallel downloads.

    python bench/nodes.py --db-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Two ``qprserver serve`` nodes (``workers = 1`` each) share one PostgreSQL schema and
one data folder (the shared-POSIX set-up, both on this machine). Two HAProxy
frontends in TCP mode run side by side: one balances to node 1 only, the other to
both. The same OpenSSH ``sftp`` clients (``--clients`` at once, each ``get``-ting the
same file to /dev/null) run on the same cores, alternating between the frontends;
the medians and their ratio are printed and written to ``results/nodes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import Client, Endpoint
from populate import FileSpec, populate
from qprside import QprServer
from util import BenchError, MiB, PdfMaker, free_port, log, median, run, wait_for_banner

RESULTS = Path(__file__).resolve().parent / "results" / "nodes.json"
DEPOSITOR = "190500027"
RECIPIENT = "180500016"
SUBJECT = "510512349"
HAPROXY = """\
global
    maxconn 1024
defaults
    mode tcp
    timeout connect 2s
    timeout client 10m
    timeout server 10m
frontend one
    bind 127.0.0.1:{one}
    default_backend one
frontend two
    bind 127.0.0.1:{two}
    default_backend two
backend one
    server n1 127.0.0.1:{n1}
backend two
    balance roundrobin
    server n1 127.0.0.1:{n1}
    server n2 127.0.0.1:{n2}
"""


def _second_node(first: QprServer, root: Path) -> QprServer:
    """Node 2: node 1's config (same data folder, keys, schema) on another port and id."""
    second = QprServer(root / "node2", db_url=None, workers=1)
    second.config = root / "node2.toml"
    second.log_path = root / "serve2.log"
    text = first.config.read_text(encoding="utf-8")
    own = text.replace(f"port = {first.port}\n", f"port = {second.port}\n", 1)
    second.config.write_text(own.replace("[server]\n", '[server]\nnode_id = "n2"\n', 1))
    first.config.write_text(text.replace("[server]\n", '[server]\nnode_id = "n1"\n', 1))
    return second


def _downloads(client: Client, port: int, batch: Path, clients: int) -> float:
    """Seconds until ``clients`` parallel downloads through port have all finished."""
    argv = client.sftp(Endpoint(RECIPIENT, port), batch)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(clients)
    ]
    failed = [p for p in procs if p.wait(600) != 0]
    took = time.perf_counter() - start
    if failed:
        err = failed[0].stderr.read().decode(errors="replace") if failed[0].stderr else ""
        raise BenchError(f"{len(failed)} of {clients} downloads failed: {err.strip()[-300:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True, help="postgresql+asyncpg://… (several nodes)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    root = Path(tempfile.mkdtemp(prefix="qpr-nodes-"))
    first = QprServer(root, db_url=args.db_url, workers=1)
    nodes: list[QprServer] = [first]
    balancer: subprocess.Popen[bytes] | None = None
    try:
        first.write_config(None)
        second = _second_node(first, root)
        nodes.append(second)
        first.cli_inprocess("init")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "id")], what="key")
        for ik, role in ((DEPOSITOR, "depositor"), (RECIPIENT, "recipient")):
            first.cli_inprocess("account", "add", ik, "--name", ik, "--role", role)
            first.cli_inprocess("account", "key", "add", ik, str(root / "id.pub"))
        size = args.size_mib * MiB
        path = root / "bench.pdf"
        sha = PdfMaker().write(path, size, "nodes")
        spec = FileSpec(f"{SUBJECT}_bench.pdf", path, sha, size)
        populate(first.config, DEPOSITOR, SUBJECT, {RECIPIENT: [spec]})
        for node in nodes:
            node.start()
        one, two = free_port(), free_port()
        (root / "haproxy.cfg").write_text(
            HAPROXY.format(one=one, two=two, n1=first.port, n2=second.port), encoding="utf-8"
        )
        balancer = subprocess.Popen(
            [haproxy, "-f", str(root / "haproxy.cfg"), "-db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (one, two):
            wait_for_banner(port, b"SSH-2.0-qprserver", 30)
        batch = root / "get.batch"
        batch.write_text(f"get /inbox/{spec.name} /dev/null\n", encoding="utf-8")
        client = Client(root / "id", None)
        _downloads(client, two, batch, 2)  # warm both nodes and the page cache
        times: dict[str, list[float]] = {"1 node": [], "2 nodes": []}
        for i in range(args.runs):
            for label, port in (("1 node", one), ("2 nodes", two)):
                took = _downloads(client, port, batch, args.clients)
                times[label].append(took)
                mbs = args.clients * size / took / 1e6
                log(f"run {i + 1} {label}: {took:.2f} s, {mbs:.0f} MB/s")
        rates = {k: args.clients * size / median(v) / 1e6 for k, v in times.items()}
        ratio = rates["2 nodes"] / rates["1 node"]
        result = {
            "clients": args.clients,
            "size_mib": args.size_mib,
            "runs": args.runs,
            "seconds": times,
            "aggregate_mb_per_s": {k: round(v, 1) for k, v in rates.items()},
            "ratio_2_to_1": round(ratio, 2),
            # Others' work on the same cores skews both sides: say how busy the machine was.
            "load_average_1min": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(
            f"{args.clients} parallel downloads of {args.size_mib} MiB through HAProxy: "
            f"1 node {rates['1 node']:.0f} MB/s, 2 nodes {rates['2 nodes']:.0f} MB/s, "
            f"ratio {ratio:.2f} (load {result['load_average_1min']} on {os.cpu_count()} CPUs)"
        )
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait()
        for node in nodes:
            node.stop()
        first.drop_schema()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        sys.exit(f"bench failed: {exc}")
