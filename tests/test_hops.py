"""Every hop converts a small model, and each artifact, run in its own runtime, matches the source.

Tolerance: 1e-4 max abs against the source (cumulative) and against the parent (per hop). The
conversions are made once per module by `runs`, so each test here also passes when run alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.registry import DEFAULT_REGISTRY
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Run:
    """One conversion folder, verified on CPU: its manifest and its report."""

    manifest: dict[str, Any]
    report: dict[str, Any]

    def hops_compared(self) -> set[str]:
        """The hops whose artifacts were compared against their parent, by the manifest's hop names."""
        by_key = {a["format"] + ("" if a["precision"] == "float32" else "-" + a["precision"]): a
                  for a in self.manifest["artifacts"]}
        return {by_key[h["dst"]]["hop"] for h in self.report["hops"] if h["dst"] in by_key}


def _verify(directory: Path, work: Path) -> Run:
    report_path = work / f"{directory.name}.report.json"
    result = run_bridge("verify", str(directory), "--device", "cpu", "--samples", "4", "--latency-runs", "3",
                        "--json", str(report_path), "--quiet")
    report = json.loads(report_path.read_text())
    assert result.returncode == 0 == report["exit_code"], result.stderr
    return Run(json.loads((directory / "manifest.json").read_text()), report)


@pytest.fixture(scope="module")
def runs(converted_cnn: Path, converted_keras: Path, convert_once: Callable[..., Path],
         tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    work = tmp_path_factory.mktemp("hops")
    made = {"cnn": _verify(converted_cnn, work), "keras": _verify(converted_keras, work)}
    for label, source in (("from_tflite", converted_cnn / "tflite" / "model.tflite"),
                          ("from_saved_model", converted_cnn / "tf" / "saved_model")):
        made[label] = _verify(convert_once(source, "--to", "onnx"), work)
    made["to_keras"] = _verify(convert_once(converted_cnn / "onnx" / "model.onnx", "--to", "keras"), work)
    return made


def _assert_every_artifact_within(run: Run) -> None:
    """Each artifact ran, was compared with its parent and with the source, and stayed within 1e-4."""
    keys = {a["format"] + ("" if a["precision"] == "float32" else "-" + a["precision"]) for a in run.manifest["artifacts"]}
    assert {r["name"] for r in run.report["representations"] if r["status"] == "ok"} >= keys | {"source"}
    assert {c["dst"] for c in run.report["hops"]} >= keys
    assert {c["dst"] for c in run.report["cumulative"]} >= keys
    for comparison in run.report["hops"] + run.report["cumulative"]:
        for output in comparison["outputs"]:
            assert output["max_abs"] is not None and output["max_abs"] < 1e-4, (comparison["src"], comparison["dst"], output)
        assert comparison["passed"]


def test_torch_source_every_format(runs: dict[str, Run]) -> None:
    assert {a["format"] for a in runs["cnn"].manifest["artifacts"]} == {"onnx", "tf", "tflite"}
    _assert_every_artifact_within(runs["cnn"])


def test_keras_source_every_format(runs: dict[str, Run]) -> None:
    assert {a["format"] for a in runs["keras"].manifest["artifacts"]} == {"onnx", "tf", "tflite", "torch"}
    _assert_every_artifact_within(runs["keras"])


def test_tflite_and_savedmodel_sources_to_onnx(runs: dict[str, Run]) -> None:
    for label in ("from_tflite", "from_saved_model"):
        assert [a["format"] for a in runs[label].manifest["artifacts"]] == ["onnx"]
        _assert_every_artifact_within(runs[label])


def test_keras_is_a_target_made_by_onnx2tf_and_loaded_in_safe_mode(runs: dict[str, Run]) -> None:
    run = runs["to_keras"]
    [keras] = run.manifest["artifacts"]
    assert (keras["format"], keras["hop"], keras["path"]) == ("keras", "onnx->keras", "keras/model.keras")
    assert keras["inputs"][0]["perm"] == [0, 2, 3, 1]  # onnx2tf's channels-last input, recorded
    _assert_every_artifact_within(run)  # verify loaded it (tf_keras, safe_mode on) and ran it


# Hops from sources this module does not build, exercised (converted, checked, asserted) where those sources are.
ELSEWHERE = {"jax->onnx": "test_jax.py", "jax->tf": "test_jax.py", "tf->tfjs": "test_serving.py",
             "tf->tf-serving": "test_serving.py", "torch->torchserve": "test_serving.py",
             "tf-serving->tf": "test_serving.py", "torchserve->torch": "test_serving.py"}


def test_every_registered_hop_was_exercised(runs: dict[str, Run]) -> None:
    seen = set().union(*(run.hops_compared() for run in runs.values()))
    for hop, module in ELSEWHERE.items():
        if f'"{hop}"' in (Path(__file__).parent / module).read_text(encoding="utf-8"):
            seen.add(hop)
    assert {h.name for h in DEFAULT_REGISTRY} <= seen, {h.name for h in DEFAULT_REGISTRY} - seen
