"""Latency: numpy's percentiles over the timed runs, and the one timing loop."""

from __future__ import annotations

import pytest

from bridge.verification.timing import LatencyStats, measure


def test_percentiles_and_mean_in_milliseconds() -> None:
    samples_ns = [i * 1_000_000 for i in range(1, 101)]  # 1 ms .. 100 ms
    stats = LatencyStats.from_ns(samples_ns, batch=4)
    assert stats.p50 == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    assert (stats.n, stats.batch) == (100, 4)
    assert LatencyStats.from_ns([2_000_000], 1).p99 == pytest.approx(2.0)


def test_measure_warms_up_then_times_each_run_with_a_synchronize_inside() -> None:
    calls: list[str] = []
    times = measure(lambda feeds: calls.append("run"), {}, lambda: calls.append("sync"), warmup=2, runs=3)
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert calls == ["run", "run", "sync", "run", "sync", "run", "sync", "run", "sync"]


def test_every_page_shows_the_figure_the_json_holds() -> None:
    # 0.56949 ms would print 0.569 from the float but 0.570 from the JSON's 0.5695: the CI saw it.
    stats = LatencyStats.from_ns([569_490], batch=1)
    assert stats.p50 == stats.to_json()["p50"] == 0.5695
    assert f"{stats.p50:.3f}" == f"{stats.to_json()['p50']:.3f}"
