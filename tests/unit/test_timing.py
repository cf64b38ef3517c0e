"""Latency: numpy's percentiles over the timed runs, and the one timing loop."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import defaults
from bridge.steps import TimingTurn, shared_turn
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


_CHILD = """
import sys, time
from pathlib import Path
from bridge.steps import TimingTurn
fd, shared_for, log = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
with TimingTurn(fd) as turn:  # inherited, held shared since before this process started
    log.with_suffix(".ready").touch()
    while len(list(log.parent.glob("*.ready"))) < 3:  # all three have started before any goes on
        time.sleep(0.01)
    time.sleep(shared_for)  # loading the model and running the samples, beside the others
    shared_end = time.monotonic()
    turn.alone()
    timed_start = time.monotonic()
    time.sleep(0.3)  # the timed runs
    log.write_text(f"{shared_end} {timed_start} {time.monotonic()}")
"""


def test_side_by_side_children_time_their_runs_alone(tmp_path: Path) -> None:
    # verify takes the lock shared for each child before starting it; the child times its runs only
    # once no other child holds it: the quick child waits for the slow one's samples, no two timed
    # windows overlap, and a child started while another is timed waits to start.
    lock = tmp_path / "timing.lock"
    procs, fds = [], []
    for name, shared in (("quick", 0.1), ("slow", 1.0), ("middle", 0.5)):
        fd = shared_turn(lock)
        fds.append(fd)
        procs.append(subprocess.Popen([sys.executable, "-c", _CHILD, str(fd), str(shared), str(tmp_path / f"{name}.log")],
                                      pass_fds=(fd,)))
    for fd in fds:
        os.close(fd)
    assert [p.wait(timeout=30) for p in procs] == [0, 0, 0]
    windows = {name: [float(x) for x in (tmp_path / f"{name}.log").read_text().split()] for name in ("quick", "slow", "middle")}
    last_shared = max(w[0] for w in windows.values())
    assert all(w[1] >= last_shared for w in windows.values())
    timed = sorted((w[1], w[2]) for w in windows.values())
    assert all(earlier[1] <= later[0] for earlier, later in zip(timed, timed[1:], strict=False))
    # While one holds the lock to time, the parent cannot take it to start another child.
    timing = shared_turn(lock)
    fcntl.flock(timing, fcntl.LOCK_EX)
    try:
        probe = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.close(probe)
    finally:
        os.close(timing)


def test_without_a_lock_a_turn_does_nothing() -> None:
    with TimingTurn(None) as turn:
        turn.alone()  # returns at once: representations one at a time need no lock


def test_verify_runs_one_representation_per_core_and_one_more_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_PARALLEL_STEPS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert defaults.parallel_runs() == 3 and defaults.parallel_steps() == 2
    monkeypatch.setenv("BRIDGE_PARALLEL_STEPS", "1")  # one at a time, as asked
    assert defaults.parallel_runs() == 1
