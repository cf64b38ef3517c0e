"""bridge verify against real runtimes: drift is caught, layouts are enforced, reports are stable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from bridge.verification.report import REPORT_SCHEMA
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow
SCHEMA = Path(__file__).resolve().parents[1] / "bridge" / "verification" / "report_schema.json"


def _onnx_model(path: Path, body: str) -> Path:
    """Write a tiny ONNX model with the onnx helper API in a child process."""
    code = (
        "import numpy as np, onnx\nfrom onnx import helper, TensorProto, numpy_helper\n"
        f"{body}\n"
        "model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])\n"
        "model.ir_version = 8\nonnx.checker.check_model(model)\n"
        f"onnx.save(model, {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    return path


def _verify(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report_path = directory.parent / f"{directory.name}.report.json"
    result = run_bridge("verify", str(directory), "--device", "cpu", "--samples", "4", "--latency-runs", "5",
                        "--json", str(report_path), *args)
    return result, json.loads(report_path.read_text())


def test_changed_weight_fails_with_exit_1_naming_the_hop(zoo_model: Callable[[str], Path],
                                                        convert_once: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "mlp.bridge"
    shutil.copytree(convert_once(zoo_model("mlp"), "--to", "tflite"), out)
    code = (
        "import onnx, numpy as np\nfrom onnx import numpy_helper\n"
        f"m = onnx.load({str(out / 'onnx' / 'model.onnx')!r})\n"
        "t = m.graph.initializer[0]\na = numpy_helper.to_array(t).copy()\na.flat[0] += 0.5\n"
        "t.CopyFrom(numpy_helper.from_array(a, t.name))\n"
        f"onnx.save(m, {str(out / 'onnx' / 'model.onnx')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    refused = run_bridge("verify", str(out), "--device", "cpu", "--samples", "2")
    assert refused.returncode == 2 and "changed since convert" in refused.stderr  # the folder is not what convert wrote
    result, report = _verify(out, "--allow-changed")
    assert result.returncode == 1, result.stderr
    assert "source -> onnx" in result.stderr
    hop = next(h for h in report["hops"] if h["dst"] == "onnx")
    assert not hop["passed"] and hop["outputs"][0]["max_abs"] > 1e-3
    # tflite was made from the good ONNX before the edit: its own hop now fails too, but not against the source.
    cumulative = next(c for c in report["cumulative"] if c["dst"] == "tflite")
    assert cumulative["passed"]
    onnx_rep = next(r for r in report["representations"] if r["name"] == "onnx")
    assert onnx_rep["digest"].startswith("changed since convert") and onnx_rep["digest"].endswith("allowed")


def test_wrong_perm_in_manifest_is_caught(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path],
                                         tmp_path: Path) -> None:
    out = tmp_path / "conv1d.bridge"
    shutil.copytree(convert_once(zoo_model("conv1d"), "--to", "tflite"), out)
    manifest = json.loads((out / "manifest.json").read_text())
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite")
    tflite["outputs"][0]["perm"] = list(reversed(tflite["outputs"][0]["perm"]))  # a plausible but wrong layout
    (out / "manifest.json").write_text(json.dumps(manifest))
    result, report = _verify(out)
    assert result.returncode != 0
    bad = [c for c in report["hops"] + report["cumulative"] if c["dst"] == "tflite"]
    assert bad and not any(c["passed"] for c in bad)


def test_nan_is_named(tmp_path: Path) -> None:
    model = _onnx_model(tmp_path / "log.onnx", (
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 8])\n"
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 8])\n"
        "graph = helper.make_graph([helper.make_node('Log', ['x'], ['y'])], 'g', [x], [y])"
    ))
    result = run_bridge("convert", str(model), "--to", "tflite", "--quiet")
    assert result.returncode == 0, result.stderr
    result, report = _verify(tmp_path / "log.bridge")
    assert result.returncode == 1
    assert "NaN" in result.stderr and "y" in result.stderr
    output = report["cumulative"][0]["outputs"][0]
    assert output["nonfinite"].startswith("NaN") and not output["passed"]


@pytest.mark.heavy  # 170 s in CI; equal inputs give equal figures: test_model_shaped_inputs_verify_exactly_like_a_sample_axis
def test_replaying_saved_inputs_gives_identical_figures(converted_cnn: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.json"
    run_bridge("verify", str(converted_cnn), "--device", "cpu", "--samples", "3", "--seed", "7", "--json", str(first))
    data = json.loads(first.read_text())
    inputs = Path(data["inputs"]["path"])
    assert inputs.is_file() and data["inputs"]["seed"] == 7
    second = tmp_path / "second.json"
    run_bridge("verify", str(converted_cnn), "--device", "cpu", "--inputs", str(inputs), "--json", str(second))
    again = json.loads(second.read_text())
    assert again["inputs"]["sha256"] == data["inputs"]["sha256"]
    for a, b in zip(data["cumulative"], again["cumulative"], strict=False):
        assert a["dst"] == b["dst"]
        assert [o["max_abs"] for o in a["outputs"]] == [o["max_abs"] for o in b["outputs"]]


def test_report_json_validates_and_has_junit_and_markdown(converted_cnn: Path, tmp_path: Path) -> None:
    junit, markdown = tmp_path / "r.xml", tmp_path / "r.md"
    result, report = _verify(converted_cnn, "--junit", str(junit), "--markdown", str(markdown))
    assert result.returncode == 0, result.stderr
    jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    assert report["schema"] == REPORT_SCHEMA
    names = {(r["name"], r["device"]) for r in report["representations"]}
    assert ("tflite", "cpu") in names
    for rep in report["representations"]:
        assert rep["status"] == "ok" and rep["latency_ms"]["n"] == 5 and rep["latency_ms"]["p50"] > 0
    assert report["hops"][0]["tolerance"]["atol"] == pytest.approx(1e-4)
    assert "testcase" in junit.read_text() and "| tflite | litert | cpu |" in markdown.read_text()


def test_cuda_is_reported_not_available_without_a_gpu(converted_cnn: Path, tmp_path: Path) -> None:
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("a GPU is present: tests/test_cuda.py covers it")
    report_path = tmp_path / "r.json"
    result = run_bridge("verify", str(converted_cnn), "--samples", "2", "--latency-runs", "2", "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    cuda = [r for r in report["representations"] if r["device"] == "cuda"]
    assert cuda and all(r["status"] == "unavailable" and "cuda: not available" in r["error"] for r in cuda)


def test_tolerance_overrides_are_reported(converted_cnn: Path) -> None:
    result, report = _verify(converted_cnn, "--atol", "0.5", "--tol", "output_0=0.25")
    assert result.returncode == 0
    tolerance = report["hops"][0]["tolerance"]
    assert tolerance["atol"] == 0.25 and tolerance["source"].startswith("--tol output_0")


def test_gru_drift_is_caught(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> None:
    """The GRU case: torch.onnx exports it without an error, and it computes something else (unchecked convert)."""
    out = convert_once(zoo_model("gru"), "--to", "tflite", "--no-check")
    result, report = _verify(out)
    assert result.returncode == 1
    assert "hop source -> onnx" in result.stderr
    hop = next(h for h in report["hops"] if h["dst"] == "onnx")
    assert not hop["passed"] and hop["outputs"][0]["max_abs"] > 1e-2
    # onnx2tf reproduced the (wrong) ONNX faithfully: that hop passes, the cumulative check fails.
    assert next(h for h in report["hops"] if h["dst"] == "tflite")["passed"]
    assert not next(c for c in report["cumulative"] if c["dst"] == "tflite")["passed"]


def test_token_ids_stay_below_the_embedding_size(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> None:
    import numpy as np

    out = convert_once(zoo_model("embedding"), "--to", "onnx")  # nn.Embedding(50, 16): ids must be < 50
    result, report = _verify(out, "--samples", "64")
    assert result.returncode == 0, result.stderr
    with np.load(report["inputs"]["path"]) as data:
        ids = data["ids"]
    assert ids.dtype == np.int64 and ids.shape == (64, 1, 10)
    assert ids.max() < 50 and ids.max() >= 40  # the whole valid range is used, not the default bound (100)
    forced = _verify(out, "--int-high", "7")[1]
    with np.load(forced["inputs"]["path"]) as data:
        assert data["ids"].max() < 7


@pytest.mark.heavy  # 23 s; the exporter choice is tested by checked hops' candidates, the GRU by the drift test above
def test_gru_with_the_torchscript_exporter_passes(tmp_path: Path) -> None:
    """The workaround for the GRU case: the TorchScript exporter, from the model's code."""
    out = tmp_path / "gru_ts.bridge"
    result = run_bridge("convert", "bridge.zoo.torch_models:build_gru", "--input-shape", "x:1,12,8", "--to", "tflite",
                        "--torch-exporter", "torchscript", "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "torchscript"
    assert manifest["artifacts"][0]["options"]["exporter"] == "torchscript"
    result, report = _verify(out)
    assert result.returncode == 0, result.stderr
    worst = max(o["max_abs"] for c in report["cumulative"] for o in c["outputs"])
    assert worst < 1e-4


def test_torchscript_exporter_takes_a_program_through_its_module(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "x.bridge"
    result = run_bridge("convert", str(zoo_model("mlp")), "--to", "onnx", "--torch-exporter", "torchscript", "-o", str(out))
    assert result.returncode == 0, result.stderr
    onnx = json.loads((out / "manifest.json").read_text())["artifacts"][0]
    assert onnx["candidate"] == "torchscript" and onnx["options"]["exporter"] == "torchscript" and onnx["check"]["passed"]
