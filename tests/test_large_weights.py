"""The large-weight candidate of onnx -> tflite and onnx -> tf (bridge/hops/large_weights.py).

A model of gigabytes does not fit this suite's time, so the path is taken on a small model by
lowering its threshold (BRIDGE_LARGE_WEIGHTS=1): the same code writes the same artifacts (TFLite
buffers placed by offset after the flatbuffer, SavedModel variables), which are then checked
like any other. bench/memory_growth.py runs it at 2.25 and 4.5 GiB (bench/README.md).

The model has each kind of weight the path moves: an embedding read by Gather, a Linear on a
rank-3 activation (MatMul), a Linear on rank 2 (Gemm, weight transposed), and small ones it
leaves in the graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

MODEL = """
import sys, torch
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(300, 64)     # 75 KiB: Gather
        self.up = torch.nn.Linear(64, 256)           # 64 KiB: MatMul on [N, T, 64]
        self.norm = torch.nn.LayerNorm(256)
        self.mix = torch.nn.Linear(256, 256)         # 256 KiB: Gemm on [N, 256]
        self.head = torch.nn.Linear(256, 4)          # 4 KiB: stays in the graph
    def forward(self, ids):
        h = self.norm(torch.nn.functional.gelu(self.up(self.embed(ids))))
        return self.head(torch.tanh(self.mix(h.mean(dim=1))))
torch.manual_seed(0)
model = Model().eval()
with torch.no_grad():
    for p in model.parameters():
        p.mul_(3.0)  # outputs of a size that a wrong weight cannot hide in
    torch.export.save(torch.export.export(model, (torch.randint(0, 300, (2, 8)),)), sys.argv[1])
"""

LARGE = {"BRIDGE_LARGE_WEIGHTS": "1"}


def _bridge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model converted to tflite and tf through the large-weight candidate, once for this file."""
    folder = tmp_path_factory.mktemp("large-weights")
    model = folder / "model.pt2"
    subprocess.run([sys.executable, "-c", MODEL, str(model)], check=True, timeout=300)
    out = folder / "model.bridge"
    result = _bridge("convert", str(model), "--to", "tflite,tf", "-o", str(out), "--quiet", env=LARGE)
    assert result.returncode == 0, result.stderr
    return out


def _artifact(out: Path, fmt: str) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return next(a for a in manifest["artifacts"] if a["format"] == fmt)


@pytest.mark.parametrize("fmt", ["tflite", "tf"])
def test_the_large_weight_candidate_makes_the_artifact_and_records_what_it_moved(converted: Path, fmt: str) -> None:
    artifact = _artifact(converted, fmt)
    assert artifact["candidate"] == "large_weights", artifact
    moved = artifact["options"]["large_weights"]
    # embed (300x64), up (64x256 as [in, out]), mix (256x256, a Gemm fed transposed); head stays
    assert moved["weights"] == 3, moved
    assert moved["bytes"] == (300 * 64 + 64 * 256 + 256 * 256) * 4, moved
    assert moved["gemm_as_matmul"] == 1, moved
    assert any("converted as graph inputs" in note for note in artifact["notes"]), artifact["notes"]
    # Its signature is the model's own: the weights are not inputs any more.
    assert [i["name"] for i in artifact["inputs"]] == [i["name"] for i in _artifact(converted, "onnx")["inputs"]]
    assert artifact["check"]["passed"], artifact["check"]


def test_the_tflite_holds_its_weights_after_the_flatbuffer_by_offset(converted: Path) -> None:
    from ai_edge_litert import schema_py_generated as schema

    tflite = converted / _artifact(converted, "tflite")["path"]
    data = tflite.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    placed = [model.Buffers(i) for i in range(model.BuffersLength()) if model.Buffers(i).Offset() > 1]
    assert len(placed) == 3
    end = min(b.Offset() for b in placed)
    assert all(b.Offset() % 64 == 0 for b in placed)
    assert max(b.Offset() + b.Size() for b in placed) == len(data)
    # Nothing of the subgraph reads a weight input any more.
    subgraph = model.Subgraphs(0)
    names = [subgraph.Tensors(subgraph.Inputs(i)).Name().decode() for i in range(subgraph.InputsLength())]
    assert not [n for n in names if n.startswith("bridge_weight_")], names
    assert end < len(data) - 300 * 64 * 4


def test_verify_finds_the_large_weight_artifacts_equal_to_the_source(converted: Path) -> None:
    result = _bridge("verify", str(converted), "--device", "cpu", "--samples", "4", "--latency-runs", "1", "--json", "-")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    report = json.loads(result.stdout)
    drifts = {hop["dst"]: max(d["max_abs"] for d in hop["outputs"]) for hop in report["cumulative"]}
    assert {"tflite", "tf"} <= {t.split(" ")[0] for t in drifts}, drifts
    assert max(drifts.values()) < 1e-4, drifts


def test_below_the_threshold_the_candidate_is_not_tried_and_named_it_is(tmp_path: Path) -> None:
    """Without the lowered threshold a small model never meets it; ``--only large_weights`` still reaches it."""
    listed = _bridge("convert", str(_cnn_onnx(tmp_path)), "--to", "tflite", "--candidates")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split()[1] for line in listed.stdout.splitlines() if line.strip()[:2] in {"1.", "2.", "3.", "4."}]
    assert "large_weights" not in lines, listed.stdout
    named = _bridge("convert", str(_cnn_onnx(tmp_path)), "--to", "tflite", "--candidates", "--only", "large_weights")
    assert "1. large_weights" in named.stdout, named.stdout


def test_a_model_with_nothing_to_move_is_not_applicable_and_the_next_candidate_converts_it(tmp_path: Path) -> None:
    """A conv net's weights are 4-D: the candidate says so in the attempts and flatbuffer_direct makes the artifact."""
    out = tmp_path / "cnn.bridge"
    result = _bridge("convert", str(_cnn_onnx(tmp_path)), "--to", "tflite", "-o", str(out), "--quiet", env=LARGE)
    assert result.returncode == 0, result.stderr
    artifact = _artifact(out, "tflite")
    assert artifact["candidate"] == "flatbuffer_direct"
    first = artifact["attempts"][0]
    assert first["candidate"] == "large_weights" and first["outcome"] == "not applicable", artifact["attempts"]
    assert "nothing to stand in for" in first["message"]


def _cnn_onnx(folder: Path) -> Path:
    """A conv net of 4-D weights, as ONNX."""
    import onnx
    from onnx import helper, numpy_helper

    path = folder / "conv.onnx"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 32, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64, 8, 8])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
