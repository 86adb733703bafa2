"""One node against two behind HAProxy: aggregate throughput of parallel downloads.

    python bench/nodes.py --db-url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Two ``qprserver serve`` nodes (``workers = 1`` each) share one PostgreSQL schema and
one data folder (the shared-POSIX set-up, both on this machine). Two HAProxy
frontends in TCP mode run side by side: one balances to node 1 only, the other to
both. The same OpenSSH ``sftp`` clients (``--clients`` at once, each ``get``-ting the
same file to /dev/null) run on the same cores, alternating between the frontends;
the medians and their ratio are printed and written to ``results/nodes.json``.

Beside the times, the CPU each side used per MiB transferred (user + system, read
from ``/proc/<pid>/stat`` of the nodes' and HAProxy's processes before and after a
run, and ``getrusage`` of the finished clients): under others' load the times vary,
these much less, and they say where the cores go. The ratio is bounded by them: one
node gets at most one core, two nodes share both with everything else (S server,
H HAProxy, C clients, CPU per MiB): one node reaches min(1 / S, 2 / (S + H + C)),
two 2 / (S + H + C), so the ratio is at most max(1, 2·S / (S + H + C)).

``--haproxy plain`` runs HAProxy with its defaults (two threads here); the default,
``tuned``, forwards with ``splice`` (the kernel moves the bytes between the sockets,
HAProxy never copies them) and one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clients import Client, Endpoint
from populate import FileSpec, populate
from procmem import tree
from qprside import QprServer
from util import BenchError, MiB, PdfMaker, free_port, log, median, run, wait_for_banner

RESULTS = Path(__file__).resolve().parent / "results" / "nodes.json"
DEPOSITOR = "190500027"
RECIPIENT = "180500016"
SUBJECT = "510512349"
TICKS = os.sysconf("SC_CLK_TCK")
# HAProxy settings per --haproxy: (global, defaults) lines.
TUNING = {
    "plain": ("", ""),
    "tuned": (
        "    nbthread 1\n    tune.pipesize 262144\n",
        "    option splice-request\n    option splice-response\n",
    ),
}
HAPROXY = """\
global
    maxconn 1024
{global_tuning}defaults
    mode tcp
{defaults_tuning}    timeout connect 2s
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


def _cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds these processes have used so far (the live ones)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])  # utime (field 14)
        system += int(fields[12])  # stime (field 15)
    return user / TICKS, system / TICKS


def _clients_cpu() -> tuple[float, float]:
    """CPU seconds of this process's finished children: the sftp clients and their ssh."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def _measured(
    client: Client,
    port: int,
    batch: Path,
    clients: int,
    sides: dict[str, list[int]],
) -> tuple[float, dict[str, float]]:
    """``_downloads`` and the CPU seconds each side (name: pids) and the clients used:
    ``<side>`` in all, ``<side> sys`` of it in the kernel."""
    before = {name: _cpu_seconds(pids) for name, pids in sides.items()}
    before["clients"] = _clients_cpu()
    took = _downloads(client, port, batch, clients)
    after = {name: _cpu_seconds(pids) for name, pids in sides.items()}
    after["clients"] = _clients_cpu()
    used: dict[str, float] = {}
    for name, (user, system) in after.items():
        used[name] = user + system - sum(before[name])
        used[f"{name} sys"] = system - before[name][1]
    return took, used


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
    parser.add_argument("--haproxy", choices=sorted(TUNING), default="tuned")
    parser.add_argument(
        "--cipher", default=None, help="the clients' -c (default: OpenSSH's own choice)"
    )
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
            HAPROXY.format(
                one=one,
                two=two,
                n1=first.port,
                n2=second.port,
                global_tuning=TUNING[args.haproxy][0],
                defaults_tuning=TUNING[args.haproxy][1],
            ),
            encoding="utf-8",
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
        client = Client(root / "id", args.cipher)
        _downloads(client, two, batch, 2)  # warm both nodes and the page cache
        sides = {
            "server": [pid for node in nodes for pid in tree(node.pid)],
            "haproxy": tree(balancer.pid),
        }
        mib = args.clients * size / MiB
        times: dict[str, list[float]] = {"1 node": [], "2 nodes": []}
        cpu: dict[str, dict[str, list[float]]] = {label: {} for label in times}
        for i in range(args.runs):
            for label, port in (("1 node", one), ("2 nodes", two)):
                took, used = _measured(client, port, batch, args.clients, sides)
                times[label].append(took)
                for side, seconds in used.items():
                    cpu[label].setdefault(side, []).append(seconds / mib * 1000)
                mbs = args.clients * size / took / 1e6
                per_mib = ", ".join(f"{side} {s / mib * 1000:.2f}" for side, s in used.items())
                log(f"run {i + 1} {label}: {took:.2f} s, {mbs:.0f} MB/s; CPU ms/MiB: {per_mib}")
        rates = {k: args.clients * size / median(v) / 1e6 for k, v in times.items()}
        cpu_ms_per_mib = {
            label: {side: round(median(v), 3) for side, v in sides_.items()}
            for label, sides_ in cpu.items()
        }
        ratio = rates["2 nodes"] / rates["1 node"]
        # What the CPU costs allow on this many cores (see the docstring), from 2 nodes.
        cost = cpu_ms_per_mib["2 nodes"]
        bound = max(1.0, 2 * cost["server"] / (cost["server"] + cost["haproxy"] + cost["clients"]))
        result = {
            "clients": args.clients,
            "size_mib": args.size_mib,
            "runs": args.runs,
            "seconds": times,
            "haproxy": args.haproxy,
            "cipher": args.cipher or "client default",
            "aggregate_mb_per_s": {k: round(v, 1) for k, v in rates.items()},
            "cpu_ms_per_mib": cpu_ms_per_mib,
            "ratio_2_to_1": round(ratio, 2),
            "ratio_bound_from_cpu": round(bound, 2),
            # Others' work on the same cores skews both sides: say how busy the machine was.
            "load_average_1min": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
        }
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(
            f"{args.clients} parallel downloads of {args.size_mib} MiB through HAProxy: "
            f"1 node {rates['1 node']:.0f} MB/s, 2 nodes {rates['2 nodes']:.0f} MB/s, "
            f"ratio {ratio:.2f}, at most {bound:.2f} by the CPU costs "
            f"(load {result['load_average_1min']} on {os.cpu_count()} CPUs); "
            f"CPU ms per MiB: {json.dumps(cpu_ms_per_mib)}"
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
