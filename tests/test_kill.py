"""A convert killed with SIGKILL at any moment leaves the previous complete output, the new one, or none.

The real CLI converts a small ONNX model to TFLite in its own session; the test kills that whole
process group at points spread over a run and then reads the output directory as a consumer
would: if it exists, its manifest lists only files whose sha256 matches. bridge runs each step
in a child in a session of its own, which outlives the killed group; the test ends those
children by their process id (found by the test's temporary path in their command line) so
nothing keeps running after it.

Also here: a step that dies by a signal is reported as that step's failure, not as a crash of
bridge (a ``package.module:factory`` whose factory kills its own process with SIGSEGV).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.manifest import sha256_of

ROOT = Path(__file__).resolve().parents[1]
FIXED_KILL_POINTS = (0.3, 1.0, 2.0, 4.0)
"""Seconds after the start; more points are placed near the end of a measured run (the publish)."""


def _tiny_onnx(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("hostile_build", ROOT / "fixtures" / "hostile" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    path.write_bytes(build.tiny_model().SerializeToString())
    return path


def _start(model: Path, out: Path, tmp: Path, *, force: bool) -> subprocess.Popen[bytes]:
    # TMPDIR puts every step's request file under `tmp`, so the steps can be found by that path.
    env = {**os.environ, "TMPDIR": str(tmp)}
    cmd = [sys.executable, "-m", "bridge", "convert", str(model), "--to", "tflite", "-o", str(out), "--quiet"]
    return subprocess.Popen([*cmd, *(["--force"] if force else [])], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _processes_mentioning(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


def _steps(marker: str) -> list[int]:
    """Running bridge steps (``python -m bridge.isolation ...``) whose request files are under `marker`."""
    steps = []
    for pid in _processes_mentioning(marker):
        try:
            if b"bridge.isolation" in Path(f"/proc/{pid}/cmdline").read_bytes():
                steps.append(pid)
        except OSError:
            continue
    return steps


def _end_stray_steps(marker: str) -> int:
    """Steps of a killed run that outlived it (they should die with it); SIGKILL them and count them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_mentioning(marker):
        time.sleep(0.05)
    pids = _processes_mentioning(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a step outlived SIGKILL"
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _kill_after(proc: subprocess.Popen[bytes], seconds: float, marker: str) -> tuple[bool, int]:
    """SIGKILL the run's process group after `seconds`: (whether it was still running, steps running then)."""
    try:
        proc.wait(timeout=seconds)
        return False, 0
    except subprocess.TimeoutExpired:
        pass
    running = len(_steps(marker))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True, running


def assert_complete(out: Path, source_sha256: str) -> bytes:
    """`out` holds a manifest, the source copy and every artifact it lists with the recorded sha256, their logs, and nothing else."""
    manifest_path = out / "manifest.json"
    listing = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert manifest_path.is_file(), f"{out} exists without a manifest: {listing}"
    text = manifest_path.read_bytes()
    manifest = json.loads(text)
    assert manifest["source"]["sha256"] == source_sha256
    assert manifest["failures"] == []
    assert [a["format"] for a in manifest["artifacts"]] == ["tflite"]
    source = out / manifest["source"]["materialized"]
    assert sha256_of(source)[0] == source_sha256
    artifact_paths = [source, out / "logs"]
    for artifact in manifest["artifacts"]:
        path = out / artifact["path"]
        assert path.exists(), f"{artifact['path']} is listed but missing: {listing}"
        assert sha256_of(path) == (artifact["sha256"], artifact["bytes"]), artifact["path"]
        artifact_paths.append(path)
        if artifact.get("name_map"):  # the converter's tensor names, listed beside the artifact
            assert (out / artifact["name_map"]).is_file(), artifact["name_map"]
            artifact_paths.append(out / artifact["name_map"])
    for file in (p for p in out.rglob("*") if p.is_file()):
        assert file == manifest_path or any(file == a or a in file.parents for a in artifact_paths), f"stray file {file}"
    return text


def _kill_points(full_run: float) -> list[float]:
    # Later runs are faster than the first (warm caches): aim short of its measured end.
    near_end = [round(full_run * f, 2) for f in (0.5, 0.7, 0.8, 0.9)]
    return sorted({*FIXED_KILL_POINTS, *near_end})


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = _tiny_onnx(tmp_path / "model.onnx")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return model, tmp_path / "out", tmp


def _hidden_leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.slow
@pytest.mark.parametrize("existing", [True, pytest.param(False, marks=pytest.mark.heavy)],  # the same kill, 23 s each
                         ids=["over-previous-output", "no-previous-output"])
def test_sigkill_leaves_previous_new_or_no_output(existing: bool, workspace: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model, out, tmp = workspace
    model_sha = sha256_of(model)[0]
    started = time.monotonic()
    first = _start(model, out, tmp, force=False)
    assert first.wait(timeout=600) == 0
    full_run = time.monotonic() - started
    previous = assert_complete(out, model_sha)

    outcomes = []
    killed_mid_step = 0
    for seconds in _kill_points(full_run):
        if not existing and out.exists():
            shutil.rmtree(out)
        killed, running = _kill_after(_start(model, out, tmp, force=existing), seconds, f"{tmp_path}/")
        killed_mid_step += bool(killed and running)
        # Steps die with the run (PR_SET_PDEATHSIG): none may outlive it.
        strays = _end_stray_steps(f"{tmp_path}/")
        assert strays == 0, f"killed at {seconds} s: {strays} steps outlived the killed run"
        if not out.exists():
            assert not existing, f"killed at {seconds} s: the previous output is gone"
            outcomes.append(f"{seconds}s: none{f' ({running} steps running)' if running else ''}")
            continue
        current = assert_complete(out, model_sha)
        outcome = "previous" if existing and current == previous else "new"
        outcomes.append(f"{seconds}s: {outcome}{'' if killed else ' (finished first)'}")
        previous = current
    print(f"\nSIGKILL outcomes ({'over previous output' if existing else 'no previous output'}, "
          f"full run {full_run:.1f} s): " + "; ".join(outcomes))
    assert killed_mid_step, "no kill landed while a step was running; the test proved nothing"

    # The source is never touched, and the next complete run sweeps what the killed runs left.
    assert sha256_of(model)[0] == model_sha
    final = _start(model, out, tmp, force=True)
    assert final.wait(timeout=600) == 0
    assert_complete(out, model_sha)
    assert _hidden_leftovers(out) == []


def test_publish_over_an_existing_directory_replaces_it_whole(tmp_path: Path) -> None:
    from bridge import staging

    final = tmp_path / "out"
    (final / "old-only").mkdir(parents=True)
    (final / "manifest.json").write_text("old", encoding="utf-8")
    stage = staging.prepare(final, force=True)
    (stage / "manifest.json").write_text("new", encoding="utf-8")
    staging.publish(stage, final)
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json"]
    assert (final / "manifest.json").read_text(encoding="utf-8") == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


CRASHING_FACTORY = '''
import os, signal


def build():
    """Dies the way a converter with a native bug dies: by a signal, with no Python exception."""
    os.kill(os.getpid(), signal.SIGSEGV)
'''


def test_a_step_killed_by_a_signal_is_that_steps_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_isolated turns a child's SIGSEGV into a HopError naming the step; the parent goes on."""
    from bridge.errors import HopError
    from bridge.formats import Format
    from bridge.isolation import run_isolated
    from bridge.messages import InspectRequest, MaterializeRequest
    from bridge.runtimes.registry import DEFAULT_RUNNERS

    (tmp_path / "crashing_factory.py").write_text(CRASHING_FACTORY, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(HopError) as caught:
        run_isolated(MaterializeRequest("crashing_factory:build", tmp_path / "m"), stage="materialize")
    assert str(caught.value) == "materialize: crashed with signal SIGSEGV"
    assert caught.value.stage == "materialize"
    # The same process runs the next step as if nothing happened.
    model = _tiny_onnx(tmp_path / "model.onnx")
    info = run_isolated(InspectRequest(DEFAULT_RUNNERS.primary(Format.ONNX), model), stage="load onnx")
    assert [t.name for t in info.signature.inputs] == ["x"]


def test_cli_reports_a_crashed_step_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "crashing_factory.py").write_text(CRASHING_FACTORY, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", "crashing_factory:build", "--to", "onnx",
                             "--input-shape", "x:1,4", "-o", str(out)], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridge: error: materialize: crashed with signal SIGSEGV (log: ")
    log = Path(lines[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and not log.is_relative_to(tmp_path)  # kept, outside the output that was never made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashing_factory.py"]
