"""Peak memory and CPU time of a server's process tree, read from /proc.

``VmHWM`` is a process's peak resident set since start, or since 5 was written to
its ``clear_refs``; each scenario resets it first where allowed. For the whole tree
the sampler adds up each process's proportional set size (``Pss`` in
``smaps_rollup``: a page shared by n processes counts 1/n in each), which is what
the tree holds of the machine's memory; the plain sum of resident sets is kept
too, though it counts the shared libraries once per process. Processes that
live shorter than the sampling interval (an OpenSSH session of one login) may be
missed; the sampler walks the tree every ``interval`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _status_kb(pid: int, field: str) -> int | None:
    try:
        text = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _pss_kb(pid: int) -> int | None:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def children(pid: int) -> list[int]:
    result: list[int] = []
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return result
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            result.extend(int(c) for c in (task / "children").read_text().split())
    return result


def tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if not (PROC / str(pid)).exists():
            continue
        found.append(pid)
        todo.extend(children(pid))
    return found


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the process and cutime + cstime of the children it reaped."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); utime..cstime are fields 14-17.
    return sum(int(f) for f in fields[11:15])


def tree_cpu(root: int) -> float:
    """CPU seconds the tree has used: its live processes and whatever they reaped.

    The difference of two readings is the tree's CPU in between, also for processes
    that ended meanwhile (an OpenSSH session): their whole time moves into their
    parent's reaped-children time, and what they had used before the first reading
    is subtracted with it."""
    return sum(_cpu_ticks(pid) for pid in tree(root)) / _TICK


def children_cpu() -> float:
    """CPU seconds of this process's ended and reaped children (the clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reset_peaks(root: int) -> bool:
    """Reset VmHWM of every process in the tree; False when the kernel refused."""
    ok = True
    for pid in tree(root):
        try:
            (PROC / str(pid) / "clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


@dataclass
class Peak:
    """Peaks in MB (10^6 bytes): largest single process, and largest sums at one moment."""

    process_mb: float = 0.0
    total_mb: float = 0.0
    pss_total_mb: float = 0.0
    processes: int = 0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "peak_rss_mb": round(self.process_mb, 1),
            "peak_rss_total_mb": round(self.total_mb, 1),
            "peak_pss_total_mb": round(self.pss_total_mb, 1),
            "processes_seen": self.processes,
        }


class TreeSampler:
    """Samples a process tree in a thread until stopped."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self._hwm: dict[int, int] = {}
        self._total_kb = 0
        self._pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")

    def __enter__(self) -> TreeSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        total = pss = 0
        for pid in tree(self.root):
            hwm = _status_kb(pid, "VmHWM")
            rss = _status_kb(pid, "VmRSS")
            if hwm is not None:
                self._hwm[pid] = max(self._hwm.get(pid, 0), hwm)
            if rss is not None:
                total += rss
            pss += _pss_kb(pid) or 0
        self._total_kb = max(self._total_kb, total)
        self._pss_kb = max(self._pss_kb, pss)

    def peak(self) -> Peak:
        largest = max(self._hwm.values(), default=0)
        # The total is the largest sum of resident sets seen in one sample.
        return Peak(
            process_mb=largest * 1024 / 1e6,
            total_mb=self._total_kb * 1024 / 1e6,
            pss_total_mb=self._pss_kb * 1024 / 1e6,
            processes=len(self._hwm),
        )
