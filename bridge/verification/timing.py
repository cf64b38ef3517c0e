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
        """Percentiles (numpy's linear interpolation) and mean of `samples` nanoseconds, in ms."""
        import numpy as np

        ms = np.asarray(samples, dtype=np.float64) * 1e-6
        # Rounded here, once, to what the JSON report holds: every page then shows the same figure.
        p50, p90, p99 = (round(float(v), 4) for v in np.percentile(ms, [50, 90, 99]))
        return cls(p50=p50, p90=p90, p99=p99, mean=round(float(ms.mean()), 4), n=len(ms), batch=batch)

    def to_json(self) -> dict[str, float | int]:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean, "n": self.n, "batch": self.batch}
