"""Every hop converts a small model, and each artifact, run in its own runtime, matches the source.

Tolerance: 1e-4 max abs against the source (cumulative) and against the parent (per hop).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.registry import DEFAULT_REGISTRY
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow


def _verify(directory: Path, tmp_path: Path) -> dict:
    report_path = tmp_path / "report.json"
    result = run_bridge("verify", str(directory), "--device", "cpu", "--samples", "4", "--latency-runs", "3",
                        "--json", str(report_path), "--quiet")
    report = json.loads(report_path.read_text())
    assert result.returncode == report["exit_code"], result.stderr
    return report


def _hops_seen(report: dict, manifest: dict) -> set[str]:
    by_key = {a["format"] + ("" if a["precision"] == "float32" else "-" + a["precision"]): a for a in manifest["artifacts"]}
    return {by_key[h["dst"]]["hop"] for h in report["hops"]}


def _assert_within(report: dict) -> None:
    for comparison in report["hops"] + report["cumulative"]:
        for output in comparison["outputs"]:
            assert output["max_abs"] is not None and output["max_abs"] < 1e-4, (comparison["src"], comparison["dst"], output)
        assert comparison["passed"]


@pytest.fixture(scope="module")
def seen_hops() -> set[str]:
    return set()


def test_torch_source_every_format(converted_cnn: Path, tmp_path: Path, seen_hops: set[str]) -> None:
    report = _verify(converted_cnn, tmp_path)
    manifest = json.loads((converted_cnn / "manifest.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "tf", "tflite"}
    _assert_within(report)
    assert report["passed"]
    seen_hops |= _hops_seen(report, manifest)


def test_keras_source_every_format(converted_keras: Path, tmp_path: Path, seen_hops: set[str]) -> None:
    report = _verify(converted_keras, tmp_path)
    manifest = json.loads((converted_keras / "manifest.json").read_text())
    assert {a["format"] for a in manifest["artifacts"]} == {"onnx", "tf", "tflite", "torch"}
    _assert_within(report)
    seen_hops |= _hops_seen(report, manifest)


def test_tflite_and_savedmodel_sources_to_onnx(converted_cnn: Path, convert_once: Callable[..., Path],
                                              tmp_path: Path, seen_hops: set[str]) -> None:
    for source in (converted_cnn / "tflite" / "model.tflite", converted_cnn / "tf" / "saved_model"):
        out = convert_once(source, "--to", "onnx")
        report = _verify(out, tmp_path)
        manifest = json.loads((out / "manifest.json").read_text())
        _assert_within(report)
        seen_hops |= _hops_seen(report, manifest)


def test_every_registered_hop_was_exercised(seen_hops: set[str]) -> None:
    if not seen_hops:
        pytest.skip("run with the conversions above")
    assert {h.name for h in DEFAULT_REGISTRY} <= seen_hops
