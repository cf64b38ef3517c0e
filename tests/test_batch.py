"""bridge batch end to end: four small models to onnx and tflite and one job that segfaults, on the pool and on Ray.

The jobs run with a conversion cache of this module's own (the suite turns the cache off elsewhere):
the pool's run stores the conversions, and the Ray run that follows converts nothing again but
verifies every representation itself, so the verdicts are compared on the same artifacts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MODELS = ("mlp", "two_io", "conv1d", "embedding")
CRASHING_FACTORY = '''
import os, signal


def build():
    """Dies the way a converter with a native bug dies: by a signal, with no Python exception."""
    os.kill(os.getpid(), signal.SIGSEGV)
'''
PLAN = """\
targets: [onnx, tflite]
verify: {samples: 2, devices: [cpu], latency_runs: 2}
models:
  - mlp.pt2
  - two_io.pt2
  - conv1d.pt2
  - model: embedding.pt2
    inputs: embedding.inputs.npz
  - model: crashing:build
    name: segfault
    targets: [onnx]
    options: {input_shape: {x: [1, 4]}}
"""


def _batch(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_NO_CACHE"}
    env.update(BRIDGE_CACHE_DIR=str(folder.parent / "cache"), PYTHONPATH=str(folder), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "bridge", "batch", "plan.yaml", "--trust-factory", "crashing:build",
                             "--json", str(folder.parent / "last.json"), *args],
                            capture_output=True, text=True, cwd=folder, env=env, timeout=1200)
    report = json.loads((folder.parent / "last.json").read_text()) if (folder.parent / "last.json").is_file() else {}
    return result, report


def _verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {job["name"]: job["status"] for job in report["jobs"]}


@pytest.fixture(scope="module")
def plan(zoo_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch") / "plan"
    folder.mkdir()
    for name in MODELS:
        shutil.copy(zoo_model(name), folder / f"{name}.pt2")
    shutil.copy(zoo_model("embedding").with_name("embedding.inputs.npz"), folder)
    (folder / "crashing.py").write_text(CRASHING_FACTORY)
    (folder / "plan.yaml").write_text(PLAN)
    return folder


@pytest.fixture(scope="module")
def pool_run(plan: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    return _batch(plan, "-j", "2")


def test_every_job_runs_and_the_one_that_segfaults_is_only_its_own_error(
        pool_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], plan: Path) -> None:
    result, report = pool_run
    assert result.returncode == 2, result.stderr[-3000:]  # an error among the jobs: the plan's exit code is 2
    assert _verdicts(report) == {**dict.fromkeys(MODELS, "verified"), "segfault": "error"}
    crashed = next(j for j in report["jobs"] if j["name"] == "segfault")
    assert "SIGSEGV" in crashed["message"] and Path(crashed["log"]).is_file()
    for job in report["jobs"]:
        if job["status"] == "verified":
            hops = {(h["src"], h["dst"]) for h in job["hops"]}
            assert {("source", "onnx"), ("onnx", "tflite"), ("source", "tflite")} <= hops
            assert all(h["passed"] and h["max_abs"] < 1e-3 for h in job["hops"])
            assert (plan / "plan.batch" / "models" / job["name"] / "manifest.json").is_file()
    out = plan / "plan.batch"
    assert json.loads((out / "report.json").read_text())["counts"] == {"verified": 4, "drift": 0, "error": 1}
    assert (out / "report.xml").read_text().count("<error") == 1 and "| mlp | onnx, tflite | verified |" in \
        (out / "report.md").read_text()
    assert "5 jobs: 4 verified, 0 drift, 1 error" in result.stdout  # the table; progress went to stderr


def test_a_rerun_skips_every_done_job_and_a_changed_model_reruns_alone(
        pool_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], plan: Path) -> None:
    result, report = _batch(plan, "-j", "2")
    assert result.returncode == 2
    reused = {job["name"]: job["reused"] for job in report["jobs"]}
    assert reused == {**dict.fromkeys(MODELS, True), "segfault": False}  # an error is always tried again
    assert _verdicts(report) == _verdicts(pool_run[1])

    shutil.copy(plan / "conv1d.pt2", plan / "mlp.pt2")  # mlp's file now holds another model
    result, report = _batch(plan, "-j", "2")
    reused = {job["name"]: job["reused"] for job in report["jobs"]}
    assert reused == {"mlp": False, "two_io": True, "conv1d": True, "embedding": True, "segfault": False}
    assert _verdicts(report)["mlp"] == "verified", result.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed: pip install 'bridge[ray]'")
def test_a_local_ray_cluster_gives_the_pools_verdicts(
        pool_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]], plan: Path) -> None:
    result, report = _batch(plan, "--executor", "ray", "-j", "2", "-o", str(plan.parent / "ray.batch"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert _verdicts(report) == _verdicts(pool_run[1])
    assert report["executor"] == "ray" and all(job["worker"].startswith("ray:") for job in report["jobs"])
    assert not any(job["reused"] for job in report["jobs"])  # a new output folder: every job ran on Ray


@pytest.mark.heavy  # 186 s in the full run (passed there); the zoo's jobs are unit-tested, and a plan on the pool above
def test_the_zoo_runs_from_its_exports_and_a_jax_model_from_its_builder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bridge", "batch", "--zoo", "--select", "mlp,jnp_function", "-j", "2",
                             "-o", str(tmp_path / "zoo.batch"), "--json", "-"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {job["name"]: job for job in json.loads(result.stdout)["jobs"]}
    assert jobs["mlp"]["targets"] == ["onnx", "tf", "tflite"] and (tmp_path / "zoo.batch" / "zoo" / "mlp" / "mlp.pt2").is_file()
    assert jobs["jnp_function"]["targets"] == ["torch", "onnx", "tf", "tflite"]  # jax2onnx traces the builder
    assert all(job["status"] == "verified" and job["hops"] for job in jobs.values())
