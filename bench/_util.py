"""Shared helpers for the bench scripts: paths, medians, tool versions, a timed subprocess."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# The benchmarks time the work: the conversion cache is off for every bridge they run, except where one
# measures the cache itself (bench/cache_lookup.py turns it on for its own runs).
os.environ["BRIDGE_NO_CACHE"] = "1"

VERSIONED = ("torch", "torchvision", "onnx", "onnxscript", "onnxruntime", "onnx2tf", "tensorflow",
             "ai-edge-litert", "numpy", "click")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def machine() -> dict[str, str]:
    return {"date": datetime.date.today().isoformat(), "cpus": str(os.cpu_count()),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine()}


def timed_run(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Whole-process wall time of `cmd` in seconds (Python start and imports included)."""
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, proc
