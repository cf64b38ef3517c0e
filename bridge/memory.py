"""Memory as a resource bridge plans for: the budget, the estimate of each hop's peak, and the watch on a running step.

A converter that runs out of memory does not fail: the kernel's OOM killer ends it with SIGKILL,
minutes in. So before the first hop, `check_route` estimates each hop's peak resident memory from
the source's weight bytes (``PEAK_RATIOS``: peak over weight bytes per converter, plus the
framework's own footprint) and refuses, in one line and before anything is written, a route whose
largest hop does not fit the budget: ``--max-memory`` (library: ``max_memory=``), else the memory
this machine or container has (the cgroup limit inside a container, else MemAvailable).

While a step runs, `TreeWatch` samples the resident memory of its whole process tree (the child
and every process under it), keeps the peak, reports elapsed time and memory for a long hop,
and, with an explicit ``--max-memory``, stops the step when it goes over. A step killed by SIGKILL
that bridge did not send is reported as out of memory with its peak, never as a bare signal.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge import defaults
from bridge.errors import InputError

GB = 1024**3


LARGE = " (large weights)"
"""Appended to a hop's name in PEAK_RATIOS: its peak on the large-weight candidate."""
EXTERNAL = " (external data)"
"""Appended to a hop's name in PEAK_RATIOS: its peak when the weights reach the external-data threshold."""


@dataclass(frozen=True)
class PeakRatio:
    """A converter's peak resident memory (whole process tree) as ``base + ratio * weight bytes``."""

    ratio: float
    base: int
    measured: str
    """Where the figure comes from (bench/README.md), or that it is a bound not yet measured."""


PEAK_RATIOS: dict[str, PeakRatio] = {
    # Measured by bench/memory_growth.py at 0.5 GiB of float32 weights (bench/README.md): the hop's whole process tree.
    # onnx2tf holds the ONNX graph, its onnx-graphsurgeon copy, the TF graph with constants and the output's buffers.
    "torch->onnx": PeakRatio(6.6, int(0.7 * GB), "4.0 GB at 0.5 GiB (0.7 GB for a tiny model)"),
    "onnx->tflite": PeakRatio(9.0, int(1.2 * GB), "5.5 GB at 0.5 GiB; issue 18: 6.3 GB at 0.56 GiB"),
    "onnx->tf": PeakRatio(14.0, int(1.2 * GB), "8.0 GB at 0.5 GiB"),
    "onnx->keras": PeakRatio(14.0, int(1.2 * GB), "taken as onnx->tf's (the same onnx2tf run), not measured"),
    "default": PeakRatio(4.0, int(1.0 * GB), "a bound assumed for the other hops, not measured"),
    # torch.onnx writes weights of 2 GB or more to external data (defaults.external_data_threshold()) and holds no
    # serialized copy of them: 3.2 GB at 2.25 GiB.
    "torch->onnx" + EXTERNAL: PeakRatio(1.4, int(0.7 * GB), "3.2 GB at 2.25 GiB (bench/README.md)"),
    # The large-weight candidate (bridge/hops/large_weights.py): onnx2tf converts a graph of kilobytes, the weights are
    # streamed into the TFLite file, or held once as SavedModel variables while TensorFlow saves them.
    "onnx->tflite" + LARGE: PeakRatio(0.5, int(1.2 * GB), "0.4 GB at 2.25 GiB (the hop; its check 2.84x, bench/README.md)"),
    "onnx->tf" + LARGE: PeakRatio(2.0, int(1.2 * GB), "4.9 GB at 2.25 GiB (1.6x + base; the convert 2.78x, bench/README.md)"),
}
"""By hop name (``onnx->tflite``), with LARGE appended for the large-weight candidate and EXTERNAL for weights past the
external-data threshold; the other hops use ``default``."""



def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """``8GB``, ``512M``, ``1.5GiB``, ``2000000`` (bytes) -> bytes; an InputError naming `what` that says how to write it."""
    if isinstance(text, int):
        if text <= 0:
            raise InputError(f"{what} {text}: give a positive size such as 8GB")
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise InputError(f"{what} {text!r}: give a size such as 8GB, 512MB or 1.5GiB")
    power = " kmgt".index(match.group(2) or " ")
    return int(float(match.group(1)) * 1024**power)


def human(size: float) -> str:
    return f"{size / GB:.1f} GB" if size >= GB / 10 else f"{size / 1024**2:.0f} MB"


def available() -> tuple[int, str]:
    """Bytes this process may still use, and where that figure comes from (cgroup v2 or v1 limit, else MemAvailable)."""
    limits = []
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 1 << 60:
                limits.append((int(limit) - int(Path(usage_file).read_text().strip()), "the container's memory limit"))
        except (OSError, ValueError):
            continue
    try:
        meminfo = Path("/proc/meminfo").read_text()
        found = re.search(r"MemAvailable:\s+(\d+) kB", meminfo)
        if found:
            limits.append((int(found.group(1)) * 1024, "available memory"))
    except OSError:
        pass
    return min(limits) if limits else (1 << 62, "no limit known")


def budget(max_memory: int | None) -> tuple[int, str]:
    """The budget a conversion plans against: the explicit one, else what is available."""
    return (max_memory, "--max-memory") if max_memory is not None else available()


def estimate(hop: str, weight_bytes: int, large: bool = False) -> int:
    """A hop's expected peak over its whole process tree; `large`: on its large-weight candidate, where it has one.
    Weights that reach the external-data threshold take the hop's figure for that, where it has one."""
    keys = [hop + LARGE] if large else []
    if weight_bytes >= defaults.external_data_threshold():
        keys.append(hop + EXTERNAL)
    peak = next((PEAK_RATIOS[k] for k in (*keys, hop) if k in PEAK_RATIOS), PEAK_RATIOS["default"])
    return int(peak.base + peak.ratio * weight_bytes)


def weight_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (the staged source: the model and its external data)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def check_route(hops: list[tuple[str, str, bool]], weights: int, max_memory: int | None, model: str) -> None:
    """Refuse, before any hop, a route whose largest hop (name, tool, on the large-weight candidate) is expected to
    need more than the budget."""
    limit, where = budget(max_memory)
    needs = sorted(((estimate(name, weights, large), name, tool) for name, tool, large in hops), reverse=True)
    if not needs or needs[0][0] <= limit:
        return
    need, name, tool = needs[0]
    fits = [n for e, n, _ in needs if e <= limit]
    hint = (f"the hops that fit are {', '.join(fits)}: convert to fewer targets" if fits else
            "no hop of this route fits: use a machine with more memory, or export the model in float16")
    raise InputError(f"{model}: {name} ({tool}) {over_budget(need, weights, limit, where)}; {hint}")


def over_budget(need: int, weights: int, limit: int, where: str) -> str:
    """``needs about X GB for Y GB of weights, Z GB allowed by --max-memory`` (or ``Z GB available memory``)."""
    return (f"needs about {human(need)} for {human(weights)} of weights, "
            f"{human(limit)} {'allowed by --max-memory' if where == '--max-memory' else where}")


def tree_rss(root: int) -> int:
    """Resident bytes of process `root` and all its descendants (a step, and the servers or converters it started)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])  # the field after state: ppid
            except (OSError, ValueError, IndexError):
                continue  # it ended while being read
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


class TreeWatch:
    """Samples a running step's process tree: its peak, a heartbeat for long steps, and an explicit budget enforced."""

    INTERVAL = 0.5
    HEARTBEAT = 10.0

    def __init__(self, pid: int, max_memory: int | None, on_beat: Callable[[float, int], None] | None = None) -> None:
        self.pid = pid
        self.max_memory = max_memory
        self.available_at_start, self.available_from = available()
        self.peak = 0
        self.over_budget = False
        self.started = time.monotonic()
        self._last_beat = self.started
        self._on_beat = on_beat

    def sample(self) -> bool:
        """Take one sample; True when the step is over its explicit budget and must be stopped."""
        rss = tree_rss(self.pid)
        self.peak = max(self.peak, rss)
        now = time.monotonic()
        if self._on_beat is not None and now - self._last_beat >= self.HEARTBEAT:
            self._last_beat = now
            self._on_beat(now - self.started, rss)
        if self.max_memory is not None and rss > self.max_memory:
            self.over_budget = True
        return self.over_budget

    def out_of_memory(self) -> str:
        """``out of memory (peak X GB of Y GB ...)`` for a step stopped over its budget or killed by the kernel."""
        if self.over_budget:
            return f"out of memory (peak {human(self.peak)} of {human(self.max_memory or 0)} allowed by --max-memory)"
        return (f"out of memory (peak {human(self.peak)} of {human(self.available_at_start)} {self.available_from} when "
                "it started; ended by SIGKILL, as the kernel's out-of-memory killer does)")


__all__ = ["PEAK_RATIOS", "PeakRatio", "TreeWatch", "available", "budget", "check_route", "estimate", "human", "over_budget",
           "parse_size", "tree_rss", "weight_bytes"]
