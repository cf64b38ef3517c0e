"""Quantized artifacts against their float parent, on a classifier trained here (so its logits mean something):
int8, int8-io, dynamic and fp16 TFLite, int8 (QDQ), dynamic and fp16 ONNX, each with figures that mean something
for quantization; a bad calibration set caught; int8 inputs fed with the recorded scale; bad calibration files
refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_bridge

pytestmark = pytest.mark.slow
FEATURES, CLASSES = 16, 10


def _data(rng: np.random.Generator, centers: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, CLASSES, count)
    return (centers[labels] + 0.6 * rng.standard_normal((count, FEATURES))).astype(np.float32), labels


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 16 -> 64 -> 64 -> 10 MLP trained on ten separable clusters; calibration and evaluation sets from them."""
    import torch

    work = tmp_path_factory.mktemp("quantize")
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((CLASSES, FEATURES)).astype(np.float32) * 2.0
    x, y = _data(rng, centers, 2000)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
    model.eval()
    test_x, test_y = _data(rng, centers, 256)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(test_x)).argmax(-1).numpy() == test_y).mean())
    assert accuracy > 0.95, accuracy  # trained: its top-1 means something
    path = work / "classifier.pt2"
    torch.export.save(torch.export.export(model, (torch.from_numpy(x[:1]),)), str(path))
    calibration, _ = _data(rng, centers, 64)
    evaluation, _ = _data(rng, centers, 64)
    files = {"model": path, "calibration": work / "calibration.npz", "evaluation": work / "evaluation.npz",
             "bad_calibration": work / "bad_calibration.npz", "few": work / "few.npz", "wrong_name": work / "wrong_name.npz",
             "wrong_shape": work / "wrong_shape.npz"}
    np.savez(files["calibration"], input=calibration[:, None, :])
    np.savez(files["evaluation"], input=evaluation[:, None, :])
    np.savez(files["bad_calibration"], input=100.0 * calibration[:, None, :])
    np.savez(files["few"], input=calibration[:3, None, :])
    np.savez(files["wrong_name"], features=calibration[:, None, :])
    np.savez(files["wrong_shape"], input=calibration[:, None, :8])
    return files


def _verify(classifier: dict[str, Path], out: Path, to: str, schemes: str, calibration: str = "calibration",
            *extra: str) -> tuple[Any, dict[str, Any]]:
    report = out.with_suffix(".json")
    result = run_bridge("verify", str(classifier["model"]), "--to", to, "--quantize", schemes, "--calibration",
                        str(classifier[calibration]), "--inputs", str(classifier["evaluation"]), "-o", str(out),
                        "--device", "cpu", "--latency-runs", "3", "--json", str(report), *extra)
    assert report.is_file(), result.stderr[-3000:]
    return result, json.loads(report.read_text())


@pytest.fixture(scope="session")
def quantized(classifier: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("quantized") / "classifier.bridge"
    result, report = _verify(classifier, out, "tflite,onnx", "int8,int8-io,dynamic,fp16")
    return result, report, out


def _hop(report: dict[str, Any], dst: str) -> dict[str, Any]:
    return next(c for c in report["hops"] if c["dst"] == dst)


@pytest.mark.parametrize("key", ["tflite-int8", "tflite-int8-io", "tflite-dynamic", "tflite-fp16", "onnx-int8",
                                 "onnx-dynamic", "onnx-float16"])
def test_each_quantized_artifact_keeps_the_float_models_decisions(quantized: tuple[Any, dict[str, Any], Path],
                                                                  key: str) -> None:
    result, report, _ = quantized
    key = "tflite-float16" if key == "tflite-fp16" else key
    hop = _hop(report, key)
    output = hop["outputs"][0]
    assert hop["passed"], output
    assert output["top1_agreement"] >= 0.97 and output["top5_overlap"] >= 0.9
    floor = 30.0 if key.endswith("float16") else 15.0
    assert output["sqnr_db"] >= floor, output
    if "float16" not in key:  # quantized tolerances, never the float ones
        assert output["tolerance"]["source"].endswith("(quantized)") and output["tolerance"]["min_sqnr_db"] is not None
    if "int8" in key:  # the error in steps of the int8 scale the logits are read from: a few steps at most
        assert 0 < output["max_abs_scales"] < 10, output
    assert result.returncode == 0, result.stderr[-3000:]


def test_each_quantized_artifact_names_the_layers_that_lose_the_most(quantized: tuple[Any, dict[str, Any], Path]) -> None:
    result, report, _ = quantized
    found = {f["hop"]: f for f in report["quantization_layers"]}
    assert set(found) == {"onnx -> tflite-int8", "onnx -> tflite-int8-io", "onnx -> tflite-dynamic",
                          "onnx -> tflite-float16", "onnx -> onnx-int8", "onnx -> onnx-dynamic", "onnx -> onnx-float16"}
    qdq = found["onnx -> onnx-int8"]
    assert qdq["method"] == "names" and qdq["layers"], qdq  # the QDQ graph keeps the float graph's names
    order = ["node_linear", "node_relu", "node_linear_1", "node_relu_1", "node_linear_2"]
    named = [layer["node"] for layer in qdq["layers"]]
    assert named == sorted(named, key=order.index)  # graph order
    assert all(layer["lost_db"] > 0 and layer["sqnr_db"] < 200 for layer in qdq["layers"])
    assert found["onnx -> tflite-int8"]["layers"], found["onnx -> tflite-int8"]
    assert "operations that lose the most" in result.stdout


def test_the_manifest_says_how_each_was_made(quantized: tuple[Any, dict[str, Any], Path], classifier: dict[str, Path]) -> None:
    _, report, out = quantized
    manifest = json.loads((out / "manifest.json").read_text())
    artifacts = {a["format"] + ("" if a["precision"] == "float32" else "-" + a["precision"]): a for a in manifest["artifacts"]}
    onnx_int8 = artifacts["onnx-int8"]
    assert onnx_int8["made_from"] == "onnx" and onnx_int8["hop"] == "onnx->onnx"  # a child of the float ONNX
    assert onnx_int8["tool"]["name"] == "onnxruntime" and onnx_int8["options"]["quant_format"] == "QDQ"
    import hashlib

    calibration = onnx_int8["options"]["calibration"]
    assert calibration == {"sha256": hashlib.sha256(classifier["calibration"].read_bytes()).hexdigest(), "samples": 64,
                           "generated": False}
    int8_io = artifacts["tflite-int8-io"]
    assert int8_io["made_from"] == "onnx" and int8_io["options"]["inference_io"] == "int8"
    x = int8_io["inputs"][0]
    assert x["dtype"] == "int8" and x["quantization"][0] > 0  # [scale, zero_point]: verify quantizes with it
    sizes = {r["name"]: r["bytes"] for r in report["representations"]}
    assert sizes["tflite-int8"] < 0.5 * sizes["tflite"]


def test_a_wrong_recorded_input_scale_is_caught(quantized: tuple[Any, dict[str, Any], Path], tmp_path: Path) -> None:
    _, _, out = quantized
    import shutil

    copy = tmp_path / "tampered.bridge"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    artifact = next(a for a in manifest["artifacts"] if a["precision"] == "int8-io")
    artifact["inputs"][0]["quantization"][0] *= 4.0  # the recorded scale, not the model's
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = run_bridge("verify", str(copy), "--device", "cpu", "--latency-runs", "1", "--json", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert not _hop(json.loads((tmp_path / "r.json").read_text()), "tflite-int8-io")["passed"]


def test_a_calibration_set_a_hundred_times_too_wide_fails_and_the_layer_is_named(classifier: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    result, report = _verify(classifier, tmp_path / "bad.bridge", "tflite", "int8", "bad_calibration", "--no-check")
    hop = _hop(report, "tflite-int8")
    assert not hop["passed"] and hop["outputs"][0]["sqnr_db"] < 15.0
    assert result.returncode == 1 and "tflite-int8" in result.stderr
    # The first layer loses most of the signal: its inputs are quantized on a range 100x too wide.
    found = next(f for f in report["quantization_layers"] if f["hop"] == "onnx -> tflite-int8")
    worst = max(found["layers"], key=lambda layer: layer["lost_db"])
    # LiteRT computes each Linear and its ReLU in one FULLY_CONNECTED, and the int8 TFLite keeps no ONNX names: its
    # tensors are joined by value, and where the values are this far off the first ones cannot be told apart. The
    # operation losing the most is named with the ones fused before it, the first Gemm among them.
    assert worst["node"] == "node_linear" or "Gemm node_linear" in worst["fused"], found
    assert worst["lost_db"] > 100 and "Gemm node_linear" in result.stdout


def test_an_op_the_quantizer_cannot_make_int8_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    import torch

    class Wave(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.atan(x) * 2.0

    model = tmp_path / "wave.pt2"
    torch.export.save(torch.export.export(Wave(), (torch.zeros(1, 8),)), str(model))
    out = tmp_path / "wave.bridge"
    result = run_bridge("convert", str(model), "--to", "tflite", "--quantize", "int8", "-o", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"bridge: error: {model}: --quantize int8: ATAN2 stays float32 in the int8 TFLite"), line
    assert "quantize to dynamic or fp16" in line
    assert not out.exists() and not list(tmp_path.glob(".wave*"))


@pytest.mark.parametrize("which, says", [
    ("few", ("3 calibration samples", "at least 8")),
    ("wrong_name", ("input names ['features']", "['input']")),
    ("wrong_shape", ("shape [1, 8]", "expects [1, 16]")),
])
def test_a_calibration_file_that_does_not_fit_is_refused(classifier: dict[str, Path], tmp_path: Path, which: str,
                                                        says: tuple[str, ...]) -> None:
    out = tmp_path / "refused.bridge"
    result = run_bridge("convert", str(classifier["model"]), "--to", "tflite", "--quantize", "int8", "--calibration",
                        str(classifier[which]), "-o", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("bridge: error: ") and str(classifier[which]) in line
    for fragment in says:
        assert fragment in line, line
    assert not out.exists() and not list(tmp_path.glob(".refused*"))


def test_quantize_needs_a_target_it_applies_to(classifier: dict[str, Path], tmp_path: Path) -> None:
    result = run_bridge("convert", str(classifier["model"]), "--to", "tf", "--quantize", "int8", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "made for tflite and onnx" in result.stderr
    result = run_bridge("convert", str(classifier["model"]), "--to", "onnx", "--quantize", "int8-io", "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "--quantize int8-io: made for tflite only" in result.stderr


def test_without_calibration_the_warning_is_loud(classifier: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "generated.bridge"
    result = run_bridge("convert", str(classifier["model"]), "--to", "onnx", "--quantize", "int8", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8 accuracy is not meaningful" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert int8["options"]["calibration"]["generated"] is True
    assert "int8 accuracy is not meaningful" in int8["options"]["warning"]
