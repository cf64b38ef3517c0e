"""Latency: the one timing loop every runner goes through, and its summary statistics."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def measure(run: Callable[[Any], Any], feeds: Any, synchronize: Callable[[], None], *,
            warmup: int, runs: int) -> list[int]:
    """Nanoseconds for each of `runs` calls of ``run(feeds)`` after `warmup` untimed calls.

    `synchronize` is called inside the timed region so asynchronous devices (CUDA) are measured
    to completion, not to the moment the launch returned.
    """
    for _ in range(warmup):
        run(feeds)
    synchronize()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run(feeds)
        synchronize()
        samples.append(time.perf_counter_ns() - start)
    return samples


def _percentile(sorted_ns: Sequence[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) of sorted samples."""
    if len(sorted_ns) == 1:
        return float(sorted_ns[0])
    pos = (len(sorted_ns) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_ns) - 1)
    return sorted_ns[low] + (sorted_ns[high] - sorted_ns[low]) * (pos - low)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one representation on one device, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    n: int
    batch: int

    @classmethod
    def from_ns(cls, samples: Sequence[int], batch: int) -> LatencyStats:
        ordered = sorted(samples)
        ms = 1e-6
        return cls(
            p50=_percentile(ordered, 0.5) * ms,
            p90=_percentile(ordered, 0.9) * ms,
            p99=_percentile(ordered, 0.99) * ms,
            mean=sum(ordered) / len(ordered) * ms,
            n=len(ordered),
            batch=batch,
        )

    def to_json(self) -> dict[str, float | int]:
        return {"p50": round(self.p50, 4), "p90": round(self.p90, 4), "p99": round(self.p99, 4),
                "mean": round(self.mean, 4), "n": self.n, "batch": self.batch}
