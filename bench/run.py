"""qprserver against OpenSSH: ``make bench`` (``QUICK=1`` for a short run).

Starts qprserver (``qprserver init`` + ``serve``, SQLite in a temp folder unless
``--db-url``) and OpenSSH ``sshd`` with ``internal-sftp`` serving the same files,
drives both with the same ``sftp`` commands, alternating runs (qprserver, OpenSSH,
qprserver, …), and reports the medians and the ratio qprserver/OpenSSH per scenario,
once with client defaults and once with both servers forced to AES-128-GCM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import dataset
import machine
import procmem
import report
from clients import Client, Endpoint
from manyfiles import MANY_FILE_SCENARIOS
from populate import populate
from qprside import QprServer
from scenarios import (
    AES_GCM,
    BUNDLE_ID,
    BUNDLE_KEY,
    SCENARIOS,
    SUBJECT_IK,
    Ctx,
    Scenario,
    Side,
    Sizes,
    bundle_scenario,
)
from sshside import SSHD, OpenSSHServer, ensure_sshd
from util import BenchError, GiB, MiB, log, median, run, shell_join

from qprserver.ik import check_digit

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

FULL = Sizes(
    runs=3,
    big=1 * GiB,
    upload=1 * GiB,
    mget_count=5000,
    mget_size=100_000,
    mput_count=1000,
    list_count=100_000,
    list_size=4096,
    clients=32,
    parallel_size=64 * MiB,
    logins=200,
    bundle_count=10_000,
)
QUICK = Sizes(
    runs=3,
    big=64 * MiB,
    upload=64 * MiB,
    mget_count=100,
    mget_size=100_000,
    mput_count=100,
    list_count=5_000,
    list_size=4096,
    clients=8,
    parallel_size=4 * MiB,
    logins=10,
    bundle_count=300,
)
# The forced run pins the key exchange too: OpenSSH's client prefers sntrup761x25519,
# which qprserver lacks, and its cost (client and server) would otherwise dominate the
# login scenarios. --kex-as-offered leaves the key exchange to the client.
SAME_KEX = "curve25519-sha256"
ALL_SCENARIOS: list[Scenario] = [*SCENARIOS, *MANY_FILE_SCENARIOS]
RUNS: list[tuple[str, str | None]] = [("default", None), (AES_GCM, AES_GCM)]


def _ik(stem: str) -> str:
    return stem + str(check_digit(stem))


# Depositor (Medizinischer Dienst), the Landesverband NW that routing delivers to,
# and two more recipients in NW holding only the mget files and only the listing.
LV_IK = "180500016"
ACCOUNTS = {
    "md": ("190500027", "depositor", "Medizinischer Dienst Nordrhein"),
    "lv": (LV_IK, "recipient", "Landesverband der Pflegekassen NW"),
    "mget": (_ik("18050002"), "recipient", "Pflegekasse NW (mget)"),
    "list": (_ik("18050003"), "recipient", "Pflegekasse NW (ls)"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs (< 2 min)")
    parser.add_argument(
        "--runs", type=int, help="runs per server and scenario (default 3, the median of three)"
    )
    parser.add_argument(
        "--db-url",
        help="postgresql+asyncpg://user@host/db: use PostgreSQL (a fresh schema, dropped after)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="qprserver server.workers (default: the number of cores)",
    )
    parser.add_argument(
        "--only", help="comma-separated scenario numbers or names, e.g. 1,3 or download,ls"
    )
    parser.add_argument(
        "--cipher",
        choices=["default", "aes128-gcm", "both"],
        default="both",
        help="which of the two runs (default both)",
    )
    parser.add_argument(
        "--kex-as-offered",
        action="store_true",
        help=f"in the forced run, do not pin the key exchange to {SAME_KEX}",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also run a second qprserver with [metrics] enabled, alternating with the first",
    )
    parser.add_argument("--tmpdir", help="where the temp folder goes (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file ({RESULTS.name})")
    return parser.parse_args()


def _selected(only: str | None) -> tuple[list[Scenario], bool]:
    """The SFTP scenarios chosen, and whether the bundle scenario is."""
    if not only:
        return list(ALL_SCENARIOS), True
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    chosen = [s for s in ALL_SCENARIOS if str(s.id) in wanted or s.key in wanted]
    bundle = str(BUNDLE_ID) in wanted or BUNDLE_KEY in wanted
    if not chosen and not bundle:
        raise BenchError(f"--only {only}: no such scenario")
    return chosen, bundle


def _check_tools() -> None:
    missing = [t for t in ("sftp", "ssh", "ssh-keygen") if shutil.which(t) is None]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: install openssh-client")


def _stat_entry(times: list[float], extras: list[dict[str, float]]) -> dict[str, object]:
    entry: dict[str, object] = {
        "median_s": round(median(times), 4),
        "runs_s": [round(t, 4) for t in times],
    }
    for key in sorted({k for e in extras for k in e}):
        entry[f"median_{key}"] = round(median([e[key] for e in extras if key in e]), 4)
    return entry


# The side with [metrics] enabled (``--metrics``): the same server, counting.
METRICS_SIDE = "qprserver+metrics"


def provision(qpr: QprServer, key: Path, data: dataset.Dataset) -> None:
    """Accounts, keys and the route through the CLI, then the bulk documents."""
    t0 = time.perf_counter()
    qpr.write_config(None)
    qpr.cli("init")
    for ik, role, name in ACCOUNTS.values():
        qpr.cli_inprocess("account", "add", ik, "--name", name, "--role", role)
        qpr.cli_inprocess("account", "key", "add", ik, f"{key}.pub")
    qpr.cli_inprocess(
        "route", "add", "--kind", "pruefbericht", "--land", "NW", "--recipient", LV_IK
    )
    log(f"qprserver provisioned through its CLI in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    populate(
        qpr.config,
        ACCOUNTS["md"][0],
        SUBJECT_IK,
        {ACCOUNTS[role][0]: specs for role, specs in data.inboxes.items() if specs},
    )
    log(f"qprserver populated in {time.perf_counter() - t0:.1f} s")


def run_scenario(
    scenario: Scenario, ctx: Ctx, sides: list[Side], negotiated: dict[str, dict[str, str]]
) -> dict[str, object]:
    sizes = ctx.sizes
    title = scenario.title(sizes)
    result: dict[str, object] = {
        "id": scenario.id,
        "name": scenario.key,
        "title": title,
        "cipher": ctx.cipher_label,
        "negotiated": negotiated,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "commands": {side.name: scenario.commands(ctx, side) for side in sides},
    }
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    extras: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    peaks: dict[str, procmem.Peak] = {}
    try:
        with contextlib.ExitStack() as stack:
            samplers = {}
            for side in sides:
                procmem.reset_peaks(side.root_pid())
                samplers[side.name] = stack.enter_context(procmem.TreeSampler(side.root_pid()))
            for i in range(sizes.runs):
                for side in sides:
                    server_cpu = procmem.tree_cpu(side.root_pid())
                    clients_cpu = procmem.children_cpu()
                    measured = scenario.measure(ctx, side, i)
                    extra = dict(measured.extra)
                    extra["cpu_server_s"] = (
                        procmem.tree_cpu(side.root_pid()) - server_cpu - measured.check_cpu_s
                    )
                    extra["cpu_clients_s"] = (
                        procmem.children_cpu() - clients_cpu - measured.check_clients_cpu_s
                    )
                    times[side.name].append(measured.seconds)
                    extras[side.name].append(extra)
                    log(
                        f"{scenario.id} {title} [{ctx.cipher_label}] {side.name} "
                        f"run {i + 1}/{sizes.runs}: {measured.seconds:.3f} s, CPU server "
                        f"{extra['cpu_server_s']:.2f} s, clients {extra['cpu_clients_s']:.2f} s"
                    )
        for side in sides:
            peaks[side.name] = samplers[side.name].peak()
    except BenchError as exc:
        log(f"{scenario.id} {title} [{ctx.cipher_label}] FAILED: {exc}")
        result["error"] = str(exc)
        return result
    for side in sides:
        entry = _stat_entry(times[side.name], extras[side.name])
        entry.update(peaks[side.name].as_dict())
        rate = scenario.throughput(sizes, float(entry["median_s"]))  # type: ignore[arg-type]
        if rate is not None:
            entry["throughput_unit"], entry["throughput"] = rate[0], round(rate[1], 1)
        result[side.name] = entry
    q = float(result["qprserver"]["median_s"])  # type: ignore[index]
    o = float(result["openssh"]["median_s"])  # type: ignore[index]
    if METRICS_SIDE in result:
        m = float(result[METRICS_SIDE]["median_s"])  # type: ignore[index]
        result["metrics_ratio"] = round(m / q, 3)
        log(
            f"{scenario.id} {title} [{ctx.cipher_label}] metrics on/off: "
            f"{m:.3f} s / {q:.3f} s = {m / q:.3f}"
        )
    ratio = q / o
    target = scenario.targets.get(ctx.cipher_label)
    result["ratio"] = round(ratio, 3)
    result["target"] = target
    result["met"] = None if target is None else ratio <= target
    return result


def main() -> int:
    args = parse_args()
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    scenarios, with_bundle = _selected(args.only)
    ciphers = [c for c in RUNS if args.cipher in ("both", c[0].split("@")[0])]
    _check_tools()
    ensure_sshd()
    started = time.time()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    info = {"machine": machine.machine(), "versions": machine.versions()}
    base = Path(tempfile.mkdtemp(prefix="qprbench-", dir=args.tmpdir))
    need = (
        sizes.big
        + 2 * sizes.upload
        + (sizes.mget_count + 2 * sizes.mput_count) * sizes.mget_size
        + GiB
    )
    if shutil.disk_usage(base).free < need:
        shutil.rmtree(base)
        raise BenchError(f"not enough free space in {base.parent}: need {need / 1e9:.1f} GB")
    log(f"temp folder {base}")
    qpr: QprServer | None = None
    counting: QprServer | None = None
    sshd: OpenSSHServer | None = None
    results: list[dict[str, object]] = []
    setup: dict[str, object] = {}

    def terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        scratch = base / "client"
        scratch.mkdir()
        key = scratch / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], what="ssh-keygen")
        t0 = time.perf_counter()
        data = dataset.make(base / "openssh", scratch, sizes, {s.key for s in scenarios})
        log(f"files written in {time.perf_counter() - t0:.1f} s")

        qpr = QprServer(base / "qprserver", db_url=args.db_url, workers=args.workers)
        provision(qpr, key, data)
        if args.metrics:
            counting = QprServer(
                base / "qprserver-metrics", db_url=args.db_url, workers=args.workers, metrics=True
            )
            provision(counting, key, data)
        sshd = OpenSSHServer(base / "sshd", data.folders, Path(str(key) + ".pub"))
        os.sync()

        q_side = Side(
            "qprserver",
            {role: Endpoint(ACCOUNTS[role][0], qpr.port) for role in ACCOUNTS},
            lambda: qpr.pid,  # type: ignore[union-attr]
        )
        o_side = Side(
            "openssh",
            {role: Endpoint(sshd.user, sshd.ports[role]) for role in ACCOUNTS},  # type: ignore[union-attr]
            lambda: sshd.pid,  # type: ignore[union-attr]
            outbox=data.folders["md"] / "outbox",
        )
        sides = [q_side, o_side]
        if counting is not None:
            sides.insert(
                1,
                Side(
                    METRICS_SIDE,
                    {role: Endpoint(ACCOUNTS[role][0], counting.port) for role in ACCOUNTS},
                    lambda: counting.pid,  # type: ignore[union-attr]
                ),
            )
        empty = scratch / "empty.txt"
        empty.write_text("")
        for label, cipher in ciphers:
            forced = [cipher] if cipher else None
            kex = [SAME_KEX] if cipher and not args.kex_as_offered else None
            setup[label] = {
                "forced_cipher": cipher,
                "forced_kex": kex[0] if kex else None,
                "qprserver_config": qpr.write_config(forced, kex),
                "qprserver_metrics_config": counting.write_config(forced, kex)
                if counting is not None
                else None,
                "sshd_config": sshd.write_config(forced, kex),
                "qprserver_command": shell_join([qpr.bin, "--config", str(qpr.config), "serve"]),
                "sshd_command": shell_join([str(SSHD), "-D", "-e", "-f", str(sshd.config)]),
            }
            qpr.start()
            if counting is not None:
                counting.start()
            sshd.start()
            client = Client(key, cipher)
            negotiated = {
                side.name: client.negotiated(side.endpoints["lv"], empty) for side in sides
            }
            setup[label]["negotiated"] = negotiated  # type: ignore[index]
            log(f"[{label}] negotiated {negotiated}")
            # Let qprserver's start-up catch-up jobs finish before the first measurement.
            time.sleep(1.0 if args.quick else 3.0)
            ctx = Ctx(sizes, client, scratch, data.upload_source, label)
            for scenario in scenarios:
                results.append(run_scenario(scenario, ctx, sides, negotiated))
            qpr.stop()
            if counting is not None:
                counting.stop()
            sshd.stop()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for server in (qpr, counting, sshd):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        for instance in (qpr, counting):
            if instance is not None:
                with contextlib.suppress(Exception):
                    instance.drop_schema()
        if args.keep:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    if with_bundle:
        log(f"{BUNDLE_ID} weekly bundle of {sizes.bundle_count:,} documents …")
        results.append(bundle_scenario(sizes, args.db_url))
        log(f"{BUNDLE_ID} {results[-1].get('status') or results[-1].get('error')}")
    info["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # type: ignore[index]
    document: dict[str, object] = {
        "started_at": started_at,
        "duration_s": round(time.time() - started, 1),
        "quick": args.quick,
        "database": qpr.database if qpr else "",
        "qprserver_workers": args.workers,
        "sizes": sizes.__dict__,
        **info,
        "setup": setup,
        "qprserver_commands": qpr.commands if qpr else [],
        "scenarios": results,
    }
    document["summary"] = report.summary(results)
    report.write_json(args.json, document)
    print(report.table(results))
    print()
    print(report.cpu_table(results))
    summary = document["summary"]
    assert isinstance(summary, dict)
    print()
    print(report.summary_text(summary))
    print(
        f"machine: {info['machine']['cores']} cores, {info['machine']['cpu_model']}; "  # type: ignore[index]
        f"database {document['database']}, qprserver workers {args.workers}; "
        f"results in {args.json}"
    )
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
