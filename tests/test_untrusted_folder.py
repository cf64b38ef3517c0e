"""A conversion folder is untrusted input: verify reads it through its schema, runs no code it names,
reads nothing outside it, refuses changed files, and its exit codes each mean one thing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.hostile.folders import MARKER, TAMPERS, plant_factory
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow


def _copy(folder: Path, tmp_path: Path) -> Path:
    """A copy of the folder as convert wrote it (without what an earlier verify added)."""
    copy = tmp_path / "sent" / folder.name
    shutil.copytree(folder, copy, symlinks=True, ignore=shutil.ignore_patterns("verify"))
    return copy


@pytest.mark.parametrize("tamper", TAMPERS.values(), ids=TAMPERS.keys())
def test_a_tampered_folder_is_refused_in_one_line(tamper: Callable[[Path], str], converted_mlp: Path,
                                                  tmp_path: Path) -> None:
    folder = _copy(converted_mlp, tmp_path)
    says = tamper(folder)
    report = tmp_path / "report.json"
    result = run_bridge("verify", str(folder), "--device", "cpu", "--samples", "2", "--json", str(report))
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridge: error: "), result.stderr
    assert "Traceback" not in result.stderr and says in lines[0], lines[0]
    assert str(folder) in lines[0] or "manifest.json" in lines[0], lines[0]
    assert not report.exists() and not (folder / "verify").exists()  # nothing written on refusal


def test_a_changed_artifact_verifies_with_allow_changed_and_the_report_says_so(converted_mlp: Path,
                                                                             tmp_path: Path) -> None:
    folder = _copy(converted_mlp, tmp_path)
    TAMPERS["changed_artifact"](folder)
    import json

    report = tmp_path / "report.json"
    result = run_bridge("verify", str(folder), "--device", "cpu", "--samples", "2", "--allow-changed", "--json", str(report))
    digests = {r["name"]: r["digest"] for r in json.loads(report.read_text())["representations"]}
    assert digests["source"] == "matches" and digests["tflite"] == "matches"
    assert digests["onnx"].startswith("changed since convert") and digests["onnx"].endswith("allowed")
    assert result.returncode == 2  # a truncated-by-one-byte ONNX still cannot load: that row is an error


def test_a_factory_named_by_the_folder_never_runs(tmp_path: Path, session_cache: Path) -> None:
    out = tmp_path / "mlp.bridge"
    made = run_bridge("convert", "bridge.zoo.torch_models:build_mlp", "--input-shape", "x:1,10", "--to", "onnx",
                      "-o", str(out), "--quiet", "--cache-dir", str(session_cache))  # the two tests' conversion, once
    assert made.returncode == 0, made.stderr
    plant_factory(out)
    result = run_bridge("verify", ".", "--device", "cpu", "--samples", "2", cwd=out)
    assert not (out / MARKER).exists(), "code from the folder ran"
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "the eager source was not rebuilt" in result.stdout and "--factory evilmod:make" in result.stdout
    names = [line.split()[0] for line in result.stdout.splitlines()[1:] if line and not line.startswith(("inputs", "note"))]
    assert "eager" not in names


def test_the_same_factory_named_on_the_command_line_is_rebuilt(tmp_path: Path, session_cache: Path) -> None:
    out = tmp_path / "mlp.bridge"
    made = run_bridge("convert", "bridge.zoo.torch_models:build_mlp", "--input-shape", "x:1,10", "--to", "onnx",
                      "-o", str(out), "--quiet", "--cache-dir", str(session_cache))  # the two tests' conversion, once
    assert made.returncode == 0, made.stderr
    result = run_bridge("verify", str(out), "--device", "cpu", "--samples", "2",
                        "--factory", "bridge.zoo.torch_models:build_mlp")
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:3] == ["eager", "torch", "cpu"] for line in result.stdout.splitlines())


def _interruptible() -> None:
    """In the child before exec: Ctrl-C as a terminal delivers it. A run launched in the background by a
    non-interactive shell starts with SIGINT ignored, which Python, and so bridge, would keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_ends_verify_quickly_with_its_code_and_leaves_nothing(sig: signal.Signals, code: int,
                                                                       converted_cnn: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "verify", str(converted_cnn), "--device", "cpu",
                             "--samples", "2", "--latency-runs", "1000000", "--json", str(report)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline:
        children = _children_of(proc.pid)
        time.sleep(0.05)
    assert children, "verify never started a runtime"
    time.sleep(1.0)
    os.kill(proc.pid, sig)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - started < 5, "took more than 5 s to stop"
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "no partial output was kept" in stderr
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)], "a child step outlived bridge"
    assert not report.exists() and not report.with_name("report.inputs.npz").exists()


def test_an_interrupted_convert_leaves_no_output(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn.bridge"
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "convert", str(zoo_model("cnn")), "--to", "tflite",
                             "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline:
        children = _children_of(proc.pid)
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]
    assert list(tmp_path.iterdir()) == []  # neither the output nor a staging directory


# A Ctrl-C that lands while code run by exec() on a string is running, as dataclasses' methods are
# built while bridge's modules import: CPython then ends the process by SIGINT (-2) even though
# bridge caught it and asked for 130, unless what bridge raises is not a KeyboardInterrupt. Only a
# run as `python -m` reads that flag (a script or -c exits from inside PyErr_Print before it).
_CTRL_C_IN_EXEC = """
import os, signal, sys
import bridge.cli
import bridge.isolation  # imported by the cleanup otherwise, whose own string exec() would reset the flag

def convert_that_imports(*args, **kwargs):
    exec("os.kill(os.getpid(), signal.SIGINT)\\nwhile True: pass", {"os": os, "signal": signal})

bridge.cli._run_convert = convert_that_imports
sys.argv = ["bridge", "convert", "model.pt2", "--to", "onnx"]
bridge.cli.main()
"""


def test_ctrl_c_inside_exec_still_exits_130(tmp_path: Path) -> None:
    (tmp_path / "ctrl_c_in_exec.py").write_text(_CTRL_C_IN_EXEC, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, preexec_fn=_interruptible)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "bridge: interrupted; no partial output was kept"


def test_the_cli_gives_back_the_signal_handlers_it_found() -> None:
    from bridge.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_internal_error_exits_3_with_the_traceback_in_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import bridge.verification.run
    from bridge.cli import main

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug planted by the test")

    monkeypatch.setattr(bridge.verification.run, "output_dir_for", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(main, ["verify", str(tmp_path)])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "bridge: internal error (a bug in bridge, not in your model): RuntimeError: a bug planted by the test"
    crash = next(tmp_path.glob("bridge-crash-*.txt"))
    assert "a bug planted by the test" in crash.read_text() and "Traceback" in crash.read_text()
    assert str(crash) in lines[1] and "report it" in lines[1]
