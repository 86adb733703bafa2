"""The results: a table on stdout and ``bench/results/latest.json``."""

from __future__ import annotations

import json
from pathlib import Path

MEMORY_LIMIT_MB = 300.0


def _fmt_target(target: float | None) -> str:
    return f"≤ {target:.2f}" if target is not None else "—"


def _fmt_met(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[met]


def _fmt_mb(side: dict[str, object]) -> str:
    """Peak RSS of the largest process / peak PSS of the whole tree at once."""
    return f"{side['peak_rss_mb']:.0f}/{side['peak_pss_total_mb']:.0f}"


def table(results: list[dict[str, object]]) -> str:
    header = (
        f"{'#':>1} {'scenario':<28} {'cipher':<24} {'qprserver':>10} {'OpenSSH':>10} "
        f"{'ratio':>6} {'target':>7} {'met':>3} {'MB qpr':>9} {'MB ssh':>7}  "
        "throughput qpr / OpenSSH"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        prefix = f"{r['id']:>1} {r['title']!s:<28.28} {r.get('cipher', '')!s:<24.24}"
        if "status" in r:
            lines.append(f"{prefix} {r['status']}")
            continue
        if "error" in r:
            lines.append(f"{prefix} FAILED: {r['error']}")
            continue
        q = r["qprserver"]
        o = r["openssh"]
        assert isinstance(q, dict) and isinstance(o, dict)
        unit = q.get("throughput_unit", "")
        rate = (
            f"{q['throughput']:,.0f} / {o['throughput']:,.0f} {unit}" if "throughput" in q else ""
        )
        lines.append(
            f"{prefix} {q['median_s']:>9.3f}s {o['median_s']:>9.3f}s {r['ratio']:>6.2f} "
            f"{_fmt_target(r['target']):>7} {_fmt_met(r['met']):>3} "  # type: ignore[arg-type]
            f"{_fmt_mb(q):>9} {_fmt_mb(o):>7}  {rate}"
        )
    lines.append(
        "MB: peak resident set of the largest process / peak proportional set (PSS) of "
        "all the server's processes together"
    )
    return "\n".join(lines)


def cpu_table(results: list[dict[str, object]]) -> str:
    """CPU seconds per run (medians): the server's process tree and the clients, each
    side; where the time goes when the machine's cores, not the wait, are the limit."""
    header = (
        f"{'#':>1} {'scenario':<28} {'cipher':<24} {'server qpr':>10} {'server ssh':>10} "
        f"{'clients qpr':>11} {'clients ssh':>11}"
    )
    lines = ["CPU seconds per run (median): server process tree; clients", header]
    lines.append("-" * len(header))
    for r in results:
        q, o = r.get("qprserver"), r.get("openssh")
        if not isinstance(q, dict) or not isinstance(o, dict) or "median_cpu_server_s" not in q:
            continue
        lines.append(
            f"{r['id']:>1} {r['title']!s:<28.28} {r.get('cipher', '')!s:<24.24} "
            f"{q['median_cpu_server_s']:>10.2f} {o['median_cpu_server_s']:>10.2f} "
            f"{q['median_cpu_clients_s']:>11.2f} {o['median_cpu_clients_s']:>11.2f}"
        )
    return "\n".join(lines)


def summary(results: list[dict[str, object]]) -> dict[str, object]:
    judged = [r for r in results if "ratio" in r and r.get("met") is not None]
    memory = [r for r in results if "qprserver" in r]

    def over(field: str) -> list[str]:
        # The bundle is built by one process: its peak RSS stands for both fields.
        return [
            f"{r['name']}/{r['cipher']}"
            for r in memory
            if r["qprserver"].get(field, r["qprserver"]["peak_rss_mb"])  # type: ignore[index]
            >= MEMORY_LIMIT_MB
        ]

    return {
        "ratio_targets_met": sum(1 for r in judged if r["met"]),
        "ratio_targets": len(judged),
        "ratio_targets_missed": [f"{r['name']}/{r['cipher']}" for r in judged if not r["met"]],
        "memory_limit_mb": MEMORY_LIMIT_MB,
        "memory_over_limit_per_process": over("peak_rss_mb"),
        "memory_over_limit_all_processes": over("peak_pss_total_mb"),
        "failed": [f"{r['name']}/{r.get('cipher')}" for r in results if "error" in r],
    }


def summary_text(summary: dict[str, object]) -> str:
    def names(key: str) -> str:
        value = summary[key]
        assert isinstance(value, list)
        return ", ".join(value) or "none"

    limit = f"{summary['memory_limit_mb']:.0f} MB"
    return "\n".join(
        [
            f"ratio targets met: {summary['ratio_targets_met']} of {summary['ratio_targets']}"
            f" (missed: {names('ratio_targets_missed')})",
            f"qprserver peak RSS over {limit} in one process: "
            f"{names('memory_over_limit_per_process')}",
            f"qprserver peak PSS over {limit} in all its processes together "
            f"(the workers): {names('memory_over_limit_all_processes')}",
            f"failed: {names('failed')}",
        ]
    )


def write_json(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
