"""Localisation on real conversions: the known drifts named in the source's terms, a changed weight found
exactly, a passing hop that reports nothing, and the hops that cannot be localised saying why."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_bridge

pytestmark = pytest.mark.slow

ZOO_SOURCE = Path(__file__).resolve().parents[1] / "bridge" / "zoo" / "torch_models.py"


def _line_of(text: str) -> int:
    return next(i for i, line in enumerate(ZOO_SOURCE.read_text().splitlines(), 1) if text in line)


def _convert_kept(model: Path, out: Path, *args: str) -> Path:
    """Convert with a pinned candidate that does not verify: convert keeps the closest and exits 1."""
    result = run_bridge("convert", str(model), *args, "-o", str(out), "--quiet")
    assert result.returncode == 1, result.stderr
    return out


@pytest.fixture(scope="session")
def gru_dynamo(zoo_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The GRU through the dynamo exporter alone: its ONNX drifts (0.09) from PyTorch."""
    return _convert_kept(zoo_model("gru"), tmp_path_factory.mktemp("loc") / "gru.bridge", "--to", "onnx", "--only", "dynamo")


@pytest.fixture(scope="session")
def lstm_direct(zoo_model: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LSTM through onnx2tf's flatbuffer_direct alone: its TFLite drifts (3e-4) from the ONNX."""
    return _convert_kept(zoo_model("lstm"), tmp_path_factory.mktemp("loc") / "lstm.bridge", "--to", "tflite",
                         "--only", "flatbuffer_direct")


def _explain(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = folder.parent / f"{folder.name}.explain.json"
    report.unlink(missing_ok=True)
    result = run_bridge("explain", str(folder), *args, "--json", str(report))
    data = json.loads(report.read_text()) if report.is_file() else {}
    return result, data


def test_the_gru_drift_of_the_dynamo_exporter_is_named_as_the_nn_gru(gru_dynamo: Path) -> None:
    result, data = _explain(gru_dynamo)
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    assert found["hop"] == "source -> onnx" and found["status"] == "diverges" and found["method"] == "names"
    first = found["first"]
    assert first["source"]["module"] == "rnn" and first["source"]["module_class"].endswith("GRU")
    assert first["source"]["location"].endswith(f"torch_models.py:{_line_of('out, _ = self.rnn(x)')}")
    assert "gru" in first["op"] and first["over"] > 1 and first["inputs_over"] <= 1
    assert any("gru" in op for op in first["target_ops"])  # the ONNX GRU node it became
    assert "rnn (GRU)" in result.stderr.splitlines()[0] or "rnn (GRU)" in result.stdout.splitlines()[0]


def test_the_lstm_drift_of_flatbuffer_direct_is_named_in_its_tflite_lowering(lstm_direct: Path) -> None:
    result, data = _explain(lstm_direct, "--hop", "onnx->tflite")
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    first = found["first"]
    assert first["op"] == "LSTM" and first["source"]["module"] == "rnn"
    assert any(op.startswith("UNIDIRECTIONAL_SEQUENCE_LSTM") for op in first["target_ops"])
    # The cause: the TFLite keeps the LSTM's state from one call to the next.
    assert any("keeps state between calls" in note for note in found["notes"])


def test_bisection_finds_the_same_lstm_by_converting_cuts(lstm_direct: Path) -> None:
    result, data = _explain(lstm_direct, "--hop", "onnx:tflite", "--bisect", "--max-steps", "6")
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    assert found["method"] == "bisection" and 1 <= found["steps"] <= 6
    assert found["first"]["op"] == "LSTM" and found["first"]["passed"] is False


def _change_one_weight(folder: Path, artifact: str, onnx_model: Path) -> None:
    """Add 1.0 to one element of the second conv's kernel (features.3.weight[1, 2, 1, 1]) in one artifact.

    Its float32 bytes are found in the artifact's files whatever the layout (OIHW, OHWI, HWIO) and must be
    there exactly once.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_model), load_external_data=False)
    weight = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["features.3.weight"]
    value = float(weight[1, 2, 1, 1])
    old, new = struct.pack("<f", value), struct.pack("<f", value + 1.0)
    hits = [(f, f.read_bytes().count(old)) for f in sorted((folder / artifact).rglob("*")) if f.is_file()]
    hits = [(f, n) for f, n in hits if n]
    assert len(hits) == 1 and hits[0][1] == 1, hits
    path = hits[0][0]
    path.write_bytes(path.read_bytes().replace(old, new))


@pytest.mark.parametrize(("artifact", "hop", "node", "method"), [
    ("tflite", "onnx->tflite", "node_conv2d_1", "names"),
    ("onnx", "source->onnx", "conv2d_1", "names"),
    ("tf", "onnx->tf", "node_conv2d_1", "values"),
])
def test_one_changed_weight_is_found_in_exactly_its_layer(converted_cnn: Path, tmp_path: Path, artifact: str, hop: str,
                                                          node: str, method: str) -> None:
    folder = tmp_path / "cnn.bridge"
    shutil.copytree(converted_cnn, folder)
    _change_one_weight(folder, artifact, converted_cnn / "onnx" / "model.onnx")
    result, data = _explain(folder, "--hop", hop, "--allow-changed")
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    first = found["first"]
    assert (found["status"], found["method"], first["node"]) == ("diverges", method, node)
    assert first["source"]["module"] == "features.3" and first["source"]["module_class"].endswith("Conv2d")
    assert first["fused"] == [] and first["inputs_over"] <= 1 < first["over"]
    # Its own layer, then the ops that only carry the drift on: nothing before it is over tolerance.
    assert [op["node"] for op in found["top"]][0] == node


@pytest.mark.heavy  # 30 s; bisection itself is tested on the LSTM (test_bisection_finds_the_same_lstm_by_converting_cuts)
def test_bisection_says_when_a_fresh_conversion_agrees(converted_cnn: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cnn.bridge"
    shutil.copytree(converted_cnn, folder)
    _change_one_weight(folder, "tf", converted_cnn / "onnx" / "model.onnx")
    result, data = _explain(folder, "--hop", "onnx->tf", "--allow-changed", "--bisect")
    assert result.returncode == 1
    [found] = data["localization"]
    assert found["status"] == "not localised" and found["first"] is None
    assert "converted again, the parent gives an artifact that agrees" in found["reason"]


def test_a_passing_hop_reports_that_nothing_diverges_and_exits_0(converted_cnn: Path) -> None:
    verified = {p: p.read_bytes() for p in (converted_cnn / "verify").rglob("*") if p.is_file()}
    result, data = _explain(converted_cnn, "--hop", "onnx->tflite")
    assert result.returncode == 0, result.stderr
    assert data["localization"][0]["status"] == "agrees" and data["localization"][0]["first"] is None
    assert "onnx -> tflite: nothing diverges" in result.stdout
    every = run_bridge("explain", str(converted_cnn), "--samples", "2")
    assert every.returncode == 0 and "nothing diverges: every hop (3) within tolerance" in every.stdout
    # explain keeps its inputs and logs in DIR/explain: what a verify wrote stays as it was.
    assert (converted_cnn / "explain" / "inputs.npz").is_file()
    assert {p: p.read_bytes() for p in (converted_cnn / "verify").rglob("*") if p.is_file()} == verified


def test_an_unknown_hop_lists_the_hops(converted_cnn: Path) -> None:
    result = run_bridge("explain", str(converted_cnn), "--hop", "onnx->keras")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bridge: error: --hop onnx->keras: no such hop in this folder; its hops are source->onnx, onnx->tflite, onnx->tf"
    ]
    unknown_output = run_bridge("explain", str(converted_cnn), "--output", "logits")
    assert unknown_output.returncode == 2 and "its outputs are output_0" in unknown_output.stderr


def test_a_hop_that_can_be_neither_joined_nor_bisected_says_why(tmp_path: Path) -> None:
    # A TorchScript source has no graph of named operations, and only an ONNX parent can be cut.
    script = tmp_path / "mlp.pt"
    made = subprocess.run([sys.executable, "-c", (
        "import torch, sys\n"
        "torch.manual_seed(0)\n"
        "m = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()\n"
        f"torch.jit.trace(m, torch.randn(1, 10)).save({str(script)!r})\n")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "mlp.bridge"
    converted = run_bridge("convert", str(script), "--to", "onnx", "--input-shape", "x:1,10", "-o", str(folder), "-q")
    assert converted.returncode == 0, converted.stderr
    onnx_file = folder / "onnx" / "model.onnx"
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    first = model.graph.initializer[0]
    array = numpy_helper.to_array(first).copy()
    array.flat[0] += 1.0
    first.CopyFrom(numpy_helper.from_array(array, first.name))
    onnx.save(model, str(onnx_file))
    result, data = _explain(folder, "--allow-changed")
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    assert found["status"] == "not localised"
    assert "has no graph of named operations" in found["reason"] and "only an ONNX parent can be cut" in found["reason"]
    assert "not localised" in result.stdout


def test_verify_localize_adds_the_section_to_every_report(gru_dynamo: Path, tmp_path: Path) -> None:
    from bridge.verification.report import Report

    report_path, markdown = tmp_path / "r.json", tmp_path / "r.md"
    result = run_bridge("verify", str(gru_dynamo), "--device", "cpu", "--localize", "--json", str(report_path),
                        "--markdown", str(markdown))
    assert result.returncode == 1
    report = Report.read(report_path)  # the schema, then the records
    [found] = report.localization
    assert found.first is not None and found.first.source is not None and found.first.source.module == "rnn"
    assert "**Where it diverges**" in markdown.read_text() and "in `rnn`" in markdown.read_text()
    assert "first divergent op" in result.stdout


def test_the_library_returns_the_first_divergence(lstm_direct: Path) -> None:
    import bridge

    found = bridge.explain(lstm_direct, hop="onnx->tflite", samples=4)
    assert isinstance(found, bridge.Localization) and found.diverges
    assert found.first is not None and found.first.op == "LSTM"


def test_a_keras_source_is_captured_layer_by_layer(converted_keras: Path) -> None:
    # keras -> onnx agrees within 4e-7; a tolerance below that makes the walk name the first layer over it.
    result, data = _explain(converted_keras, "--hop", "source:onnx", "--atol", "1e-9", "--rtol", "0")
    assert result.returncode == 1, result.stderr
    [found] = data["localization"]
    first = found["first"]
    assert found["method"] == "values" and found["compared"] >= 5
    assert first["source"]["module"] == first["node"] and first["source"]["module_class"] in ("Conv2D", "Dense")
    assert first["inputs_over"] <= 1 < first["over"]
