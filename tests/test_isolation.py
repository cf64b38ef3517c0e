"""Each hop and runtime runs in a child process: a crash or a hang is that step's failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import HopError
from bridge.formats import Format
from bridge.isolation import Prestarted, run_isolated
from bridge.messages import InspectRequest
from bridge.runtimes.registry import DEFAULT_RUNNERS

pytestmark = pytest.mark.slow


def _steps(parent: int, task: str, wanted: Callable[[dict[str, Any]], bool]) -> list[int]:
    """PIDs of `parent`'s running isolated `task` steps whose request `wanted` accepts."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != parent or b"bridge.isolation" not in argv or task.encode() not in argv:
            continue
        try:
            if wanted(json.loads(Path(argv[argv.index(task.encode()) + 1].decode()).read_text())):
                pids.append(int(entry.name))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def _hop_steps(parent: int, hop: str) -> list[int]:
    return _steps(parent, "hop", lambda request: f"{request['hop']['src']}->{request['hop']['dst']}" == hop)


def _run_steps(parent: int, fmt: str) -> list[int]:
    return _steps(parent, "run", lambda request: request["runner"]["format"] == fmt)


def test_a_crashing_hop_is_reported_and_the_run_goes_on(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "crash.bridge"
    # --only: one candidate per onnx2tf hop, so the crash is the hop's end rather than a reason to try the next.
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "convert", str(zoo_model("cnn")), "--to", "tflite,tf",
                             "--only", "flatbuffer_direct", "-o", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    victims: list[int] = []
    while not victims and time.monotonic() < deadline and proc.poll() is None:
        victims = _hop_steps(proc.pid, "onnx->tf")
        time.sleep(0.05)
    assert victims, "the onnx->tf hop never started"
    for pid in victims:
        os.kill(pid, signal.SIGSEGV)  # what a converter's native crash looks like from outside
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "hop onnx->tf failed: crashed with signal SIGSEGV" in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "tflite"}
    assert manifest["failures"][0]["hop"] == "onnx->tf"
    assert not (out / "tf").exists()


def test_a_step_past_its_timeout_is_stopped(zoo_model: Callable[[str], Path]) -> None:
    started = time.monotonic()
    with pytest.raises(HopError, match="gave up after 0.2 s"):
        run_isolated(InspectRequest(DEFAULT_RUNNERS.primary(Format.TORCH), zoo_model("mlp")), stage="load torch",
                     timeout=0.2)
    assert time.monotonic() - started < 30


def test_a_crashing_runtime_is_that_representation_s_error(converted_cnn: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "verify", str(converted_cnn), "--device", "cpu",
                             "--samples", "2", "--latency-runs", "2000", "--json", str(report_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    victims: list[int] = []
    while not victims and time.monotonic() < deadline and proc.poll() is None:
        victims = _run_steps(proc.pid, "tflite")
        time.sleep(0.05)
    assert victims, "the tflite runtime never started"
    for pid in victims:
        os.kill(pid, signal.SIGSEGV)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "tflite@cpu could not run: crashed with signal SIGSEGV" in stderr
    report = json.loads(report_path.read_text())
    status = {r["name"]: r["status"] for r in report["representations"]}
    assert status == {"source": "ok", "onnx": "ok", "tflite": "error", "tf": "ok"}
    assert {c["dst"] for c in report["cumulative"]} == {"onnx", "tf"}


def test_a_warm_child_imports_first_then_runs_the_request_it_is_handed(zoo_model: Callable[[str], Path]) -> None:
    warm = Prestarted(InspectRequest.task, ("torch",))
    time.sleep(0.5)
    assert warm.proc.poll() is None  # imported, and waiting for its request
    response = run_isolated(InspectRequest(DEFAULT_RUNNERS.primary(Format.TORCH), zoo_model("mlp")),
                            stage="load torch", warm=warm)
    assert [s.name for s in response.signature.inputs] == ["x"]
    assert warm.used and warm.proc.returncode == 0 and not warm.req_path.parent.exists()


def test_the_children_s_temporary_files_go_with_them(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    # TensorFlow writes an autograph module per traced function into the temporary folder and removes them at
    # exit, which a child (ended by os._exit) never reaches: 11 files were left in /tmp by each convert --to tf.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", str(zoo_model("mlp")), "--to", "tf",
                             "--no-cache", "-o", str(tmp_path / "mlp.bridge")],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_a_warm_child_that_is_not_used_is_ended_and_leaves_nothing() -> None:
    warm = Prestarted(InspectRequest.task, ("json",))
    folder, scratch = warm.req_path.parent, Path(warm._scratch.name)
    assert scratch.is_dir()
    warm.close()
    assert warm.proc.poll() is not None and not folder.exists() and not scratch.exists()
    started_for_nice = Prestarted(InspectRequest.task, (), nice=0)
    assert not started_for_nice.fits(InspectRequest.task, hide_gpu=False, nice=5, work_dir=None)
    assert not started_for_nice.fits("hop", hide_gpu=False, nice=0, work_dir=None)
    started_for_nice.close()


def test_the_hop_below_is_started_while_the_one_above_runs(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", str(zoo_model("mlp")), "--to", "tflite",
                             "-o", str(tmp_path / "mlp.bridge"), "-vv"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    started = result.stderr.index("onnx->tflite: its child started early")
    assert started < result.stderr.index("torch->onnx [dynamo]: done")  # while the hop above it ran
    # So are the checks' children, while the hop that makes their artifact runs.
    assert result.stderr.index("check of onnx: its child started early") < result.stderr.index("torch->onnx [dynamo]: done")
    assert result.stderr.index("check of tflite: its child started early") < result.stderr.index("onnx->tflite [flatbuffer_direct]: done")


def _carrier_after_its_result(parent: subprocess.Popen[str], deadline: float) -> int | None:
    """The pid of `parent`'s hop child that carries the source's runs, once it has written its hop's result."""
    found: list[int] = []
    while not found and time.monotonic() < deadline and parent.poll() is None:
        found = _steps(parent.pid, "hop", lambda request: bool(request["source_runs"]))
        time.sleep(0.01)
    if not found:
        return None
    argv = Path(f"/proc/{found[0]}/cmdline").read_bytes().split(b"\0")
    result = Path(argv[argv.index(b"hop") + 2].decode())
    while not result.exists() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.001)
    return found[0] if result.exists() else None


def test_a_crash_in_the_source_run_a_hop_carries_is_not_the_hop_s_failure(zoo_model: Callable[[str], Path],
                                                                            tmp_path: Path) -> None:
    # The child runs the source's check inputs after its hop's result is written: killed then, the hop stands and
    # the source runs in a child of its own. Killing it there is a race with a run of a few tenths of a second, so
    # up to three conversions are tried.
    for attempt in range(3):
        out = tmp_path / f"mlp{attempt}.bridge"
        proc = subprocess.Popen([sys.executable, "-m", "bridge", "convert", str(zoo_model("mlp")), "--to", "onnx",
                                 "-o", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        victim = _carrier_after_its_result(proc, time.monotonic() + 300)
        assert victim is not None, "no hop carried the source's run"
        try:
            os.kill(victim, signal.SIGSEGV)  # in the source's runs, after the hop's result
        except ProcessLookupError:
            pass
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        if (out / "logs" / "check-source.log").is_file():
            break
    else:
        pytest.fail("the carrying child finished the source's runs before it could be killed, three times")
    onnx = json.loads((out / "manifest.json").read_text())["artifacts"][0]
    # The hop's one attempt stands, checked against the source's own run.
    assert [a["outcome"] for a in onnx["attempts"]] == ["passed"] and onnx["check"]["passed"]


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="this kernel has no scheduler autogroups")
def test_a_niced_step_is_niced_against_the_other_steps_too() -> None:
    # Each step is a session of its own, and with autogroups a session's nice value is its group's.
    child = Prestarted(InspectRequest.task, ("json",), nice=5)
    try:
        deadline = time.monotonic() + 30
        while "nice 5" not in Path(f"/proc/{child.proc.pid}/autogroup").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "nice 5" in Path(f"/proc/{child.proc.pid}/autogroup").read_text()
        assert os.getpriority(os.PRIO_PROCESS, child.proc.pid) == 5
    finally:
        child.close()
