"""bridge batch's plan reader: a stranger's file, checked key by key before any job runs; and the batch verdict."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from bridge.batch import DRIFT, ERROR, VERIFIED, BatchReport, Job, JobResult, _run_logged
from bridge.batch_plan import read_plan, select, zoo_jobs
from bridge.batch_report import render, table
from bridge.errors import InputError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a.onnx").write_bytes(b"\x08\x07")  # recognised by its name; the plan reader does not load it
    (tmp_path / "b.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3")
    (tmp_path / "a.inputs.npz").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("not a model")
    return tmp_path


def _plan(folder: Path, data: object, suffix: str = ".json") -> Path:
    path = folder / f"plan{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else str(data))
    return path


def test_a_plan_becomes_jobs_with_checked_flags(folder: Path) -> None:
    plan = _plan(folder, {
        "targets": ["tflite"], "options": {"opset": 17, "dynamic_batch": True, "check": False},
        "verify": {"samples": 4, "devices": ["cpu"], "tol": {"logits": 0.01}}, "timeout": 600,
        "models": ["a.onnx", {"model": "b.tflite", "name": "bee", "targets": "onnx,tf", "inputs": "a.inputs.npz",
                                "options": {"via": ["onnx"]}, "timeout": 30}],
    })
    first, second = read_plan(plan)
    assert (first.name, first.targets, first.timeout, first.inputs) == ("a", ("tflite",), 600.0, None)
    assert first.flags == ("--opset", "17", "--dynamic-batch", "--no-check", "--samples", "4", "--device", "cpu",
                           "--tol", "logits=0.01")
    assert (second.name, second.targets, second.timeout) == ("bee", ("onnx", "tf"), 30.0)
    assert second.model == str(folder / "b.tflite") and second.inputs == str(folder / "a.inputs.npz")
    assert second.flags[-2:] == ("--via", "onnx")
    assert [j.targets for j in read_plan(plan, to="onnx")] == [("onnx",), ("onnx",)]  # --to overrides


@pytest.mark.parametrize(("data", "message"), [
    ({"models": ["../outside.onnx"]}, "leaves the plan's folder"),
    ({"models": ["/etc/passwd"]}, "leaves the plan's folder"),
    ({"targets": "onnx", "models": ["mypkg.models:build"]}, "add --trust-factory mypkg.models:build"),
    ({"targets": "onnx", "models": [{"model": "a.onnx", "options": {"trust_pickle": True}}]}, "cannot trust code"),
    ({"targets": "onnx", "models": [{"model": "a.onnx", "run": "rm -rf /"}]}, "unknown key 'run'"),
    ({"targets": "onnx", "models": [{"model": "a.onnx", "options": {"opset": "17; rm"}}]}, "is not a valid int"),
    ({"targets": "onnx", "models": [{"model": "a.onnx", "options": {"prefer": ["--trust-pickle"]}}]}, "not a valid repeat"),
    ({"targets": "onnx", "models": ["a.onnx", "a.onnx"]}, "two models are named 'a'"),
    ({"targets": "onnx", "models": [{"model": "a.onnx", "name": "../x"}]}, "names a folder"),
    ({"targets": "gguf", "models": ["a.onnx"]}, "gguf"),
    ({"models": ["a.onnx"]}, "no targets"),
    ({"models": []}, "non-empty list"),
    ([1, 2], "a plan is a mapping"),
    ({"targets": "onnx", "models": ["notes.txt"]}, "notes.txt"),
])
def test_a_bad_plan_is_one_line_naming_the_fix(folder: Path, data: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")) as caught:
        read_plan(_plan(folder, data))
    assert "\n" not in str(caught.value) and str(folder / "plan.json") in str(caught.value)


def test_yaml_plans_are_plain_data(folder: Path) -> None:
    plan = _plan(folder, "targets: onnx\nmodels:\n  - model: !!python/object/apply:os.system ['true']\n", ".yaml")
    with pytest.raises(InputError, match="not a valid plan"):
        read_plan(plan)
    assert read_plan(_plan(folder, "targets: [onnx]\nmodels: [a.onnx]\n", ".yaml"))[0].targets == ("onnx",)


def test_a_factory_named_on_the_command_line_is_a_job(folder: Path) -> None:
    (job,) = read_plan(_plan(folder, {"targets": "onnx", "models": ["mypkg.models:build"]}), trusted=("mypkg.models:build",))
    assert (job.name, job.model) == ("build", "mypkg.models:build")


def test_a_directory_is_every_model_in_it_with_its_inputs(folder: Path) -> None:
    with pytest.raises(InputError, match="needs --to"):
        read_plan(folder)
    jobs = read_plan(folder, to="onnx")
    assert [(j.name, j.inputs) for j in jobs] == [("a", str(folder / "a.inputs.npz")), ("b", None)]
    assert [j.name for j in select(jobs, "b")] == ["b"]
    with pytest.raises(InputError, match="--select c: no such job"):
        select(jobs, "c")


def test_the_zoo_plan_leaves_out_known_failures_and_slow_models() -> None:
    jobs = {j.name: j for j in zoo_jobs()}
    assert "resnet18" not in jobs and "resnet18" in {j.name for j in zoo_jobs(slow=True)}
    assert jobs["cnn"].targets == ("onnx", "tf", "tflite") and jobs["cnn"].zoo
    assert "torch" not in jobs["flax_cnn"].targets  # a known failure of the zoo


def test_the_plan_exits_2_on_any_error_else_1_on_any_drift() -> None:
    def result(name: str, status: str) -> JobResult:
        return JobResult(name, f"{name}.pt2", ("onnx",), status, {VERIFIED: 0, DRIFT: 1, ERROR: 2}[status], 1.0,
                         message="" if status == VERIFIED else f"{name} {status}")

    assert BatchReport("p", "o", "pool", (result("a", VERIFIED),)).exit_code == 0
    assert BatchReport("p", "o", "pool", (result("a", VERIFIED), result("b", DRIFT))).exit_code == 1
    report = BatchReport("p", "o", "pool", (result("a", DRIFT), result("b", ERROR), result("c", VERIFIED)))
    assert report.exit_code == 2 and not report
    assert report.counts() == {"verified": 1, "drift": 1, "error": 1}
    assert json.loads(render(report, "json"))["exit_code"] == 2
    junit = render(report, "junit")
    assert junit.count("<failure") == 1 and junit.count("<error") == 1
    assert "| b | onnx | error |" in render(report, "markdown")
    assert table(report)[-1].startswith("3 jobs: 1 verified, 1 drift, 1 error")


def test_a_job_process_that_dies_by_a_signal_is_named_not_raised(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
    with (tmp_path / "log").open("w") as out:
        code, ended = _run_logged(crash, out, {}, None)
        assert code == -signal.SIGSEGV and ended == "crashed: its process ended by SIGSEGV"
        code, ended = _run_logged([sys.executable, "-c", "import time; time.sleep(30)"], out, {}, deadline=0)
        assert ended.startswith("timed out")


def test_a_job_key_changes_with_the_models_bytes(folder: Path) -> None:
    job = Job("a", str(folder / "a.onnx"), ("onnx",))
    before = job.key({"onnx": "1.20.1"})
    assert job.key({"onnx": "1.20.1"}) == before
    assert job.key({"onnx": "1.21.0"}) != before  # a tool version
    (folder / "a.onnx").write_bytes(b"\x08\x08")
    assert job.key({"onnx": "1.20.1"}) != before


def test_options_that_are_not_a_mapping_are_refused_before_the_model_is_read(folder: Path) -> None:
    with pytest.raises(InputError, match=r"models\[0\]: options: give a mapping"):
        read_plan(_plan(folder, {"targets": "onnx", "models": [{"model": "notes.txt", "options": [1]}]}))
    (job,) = read_plan(_plan(folder, {"targets": "onnx", "models": [{"model": "notes.txt", "options": {"from": "onnx"}}]}))
    assert job.flags == ("--from", "onnx")


def test_a_hop_that_drifted_before_verify_is_the_jobs_drift_not_an_error(tmp_path: Path) -> None:
    from bridge.batch import _read_outcome

    log = tmp_path / "output.log"
    log.write_text("route: torch -> onnx\nbridge: error: hop torch->onnx: every candidate drifted; every attempt is in m\n")
    job = Job("m", "m.pt2", ("onnx",))
    drift = _read_outcome(job, tmp_path, 1, "", 3.0, log, tmp_path / "none.json")
    assert (drift.status, drift.exit_code) == (DRIFT, 1) and drift.message.startswith("hop torch->onnx: every candidate")
    assert _read_outcome(job, tmp_path, 2, "", 3.0, log, tmp_path / "none.json").status == ERROR


def test_a_plan_done_before_starts_no_executor(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.batch

    class Unstartable:
        name = "ray"

        def run(self, *args: object) -> None:
            raise AssertionError("a plan with nothing to run started its executor (a Ray cluster: seconds)")

    job = Job("a", str(folder / "a.onnx"), ("onnx",))
    earlier = JobResult("a", job.model, ("onnx",), VERIFIED, 0, 3.0, reused=True)
    monkeypatch.setattr(bridge.batch, "reusable", lambda *args: earlier)
    report = bridge.batch.run_batch([job], folder / "out", Unstartable())
    assert report.exit_code == 0 and report.results == (earlier,)
    assert (folder / "out" / "report.json").is_file()
