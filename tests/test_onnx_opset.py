"""ONNX files older than onnxruntime runs (opset 6, as the test data inside the onnx package ships them) are lifted
with onnx.version_converter, checked against the original in ONNX's reference evaluator, recorded, and converted;
the ones that cannot be lifted are refused with the op that blocks them, nothing written (tests/test_hostile.py:
onnx-old-opset-*)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_bridge

onnx = pytest.importorskip("onnx")
DATA = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"


def test_every_old_file_of_onnxs_own_test_data_is_lifted_and_agrees_with_the_original(tmp_path: Path) -> None:
    """The 79 opset-6 PyTorch-converted cases: each lifted to 18 and equal to the original within 1e-5 + 1e-4 |e|,
    the three multi-parameter PReLUs included (their slope meant the channel axis before opset 7)."""
    from bridge.messages import OpsetUpgradeRequest
    from bridge.onnx_opset import default_opset, upgrade

    lifted, notes = 0, []
    for path in sorted(DATA.glob("pytorch-converted/*/model.onnx")):
        if default_opset(onnx.load(str(path), load_external_data=False)) >= 7:
            continue
        found = upgrade(OpsetUpgradeRequest(path, tmp_path / "lifted.onnx", 18)).upgrade
        assert found is not None and found.from_opset == 6 and found.to_opset == 18, path
        lifted += 1
        notes += found.notes
    assert lifted == 79
    assert len([n for n in notes if n.startswith("PRelu")]) == 3


@pytest.mark.slow
def test_an_opset_6_file_converts_and_the_manifest_records_the_upgrade(tmp_path: Path) -> None:
    model = DATA / "pytorch-converted" / "test_PReLU_2d_multiparam" / "model.onnx"
    out = tmp_path / "prelu.bridge"
    result = run_bridge("convert", str(model), "--to", "tflite", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "opset 6 is older than onnxruntime runs; lifted to opset 18" in result.stderr
    source = json.loads((out / "manifest.json").read_text())["source"]
    upgrade = source["upgrade"]
    assert (upgrade["from_opset"], upgrade["to_opset"]) == (6, 18) and upgrade["max_abs"] < 1e-5
    assert upgrade["original_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert upgrade["notes"] and "channel axis" in upgrade["notes"][0]
    assert source["materialized"] == "source/model.opset18.onnx"
    assert source["sha256"] == hashlib.sha256((out / source["materialized"]).read_bytes()).hexdigest()
    verified = run_bridge("verify", str(out), "--device", "cpu", "--latency-runs", "1")
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]


@pytest.mark.slow
def test_weights_listed_among_the_inputs_as_before_ir_4_reach_torch(tmp_path: Path) -> None:
    # ONNX's model-zoo "light" models (IR 3) list every initializer among the graph's inputs too; each
    # failed the onnx -> torch hop (KeyError on the first weight) until they were dropped from them.
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    path = tmp_path / "old.onnx"
    onnx.save(model, str(path))
    result = run_bridge("convert", str(path), "--to", "torch", "-o", str(tmp_path / "old.bridge"))
    assert result.returncode == 0, result.stderr[-2000:]
    torch_artifact = next(a for a in json.loads((tmp_path / "old.bridge" / "manifest.json").read_text())["artifacts"]
                          if a["format"] == "torch")
    assert len(torch_artifact["inputs"]) == 1 and torch_artifact["check"]["passed"]  # x alone, not the weight


@pytest.mark.slow
def test_a_source_that_cannot_run_is_said_once_even_when_only_a_longer_route_made_an_artifact(tmp_path: Path) -> None:
    # ReduceL1 over an empty set: onnxruntime cannot run the source, the direct onnx -> tflite hop made
    # nothing, and the longer route through tf made an artifact it could not check; the user got
    # bridge's private exception name instead of this line.
    result = run_bridge("convert", str(DATA / "node" / "test_reduce_l1_empty_set" / "model.onnx"), "--to", "tflite",
                        "-o", str(tmp_path / "empty.bridge"))
    assert result.returncode == 2
    assert "the source could not run in onnxruntime" in result.stderr and "_ParentDidNotRun" not in result.stderr
    assert not (tmp_path / "empty.bridge").exists()


@pytest.mark.slow
def test_a_light_model_zoo_file_reaches_torch(tmp_path: Path) -> None:
    # ONNX's "light" SqueezeNet (opset 9, IR 3): weights listed among the inputs and computed by
    # ConstantOfShape, a Dropout-7 that onnx2torch has no converter for, a Reshape torch.export
    # cannot trace. Each of the nine light models failed the onnx -> torch hop.
    result = run_bridge("convert", str(DATA / "light" / "light_squeezenet.onnx"), "--to", "torch",
                        "-o", str(tmp_path / "sq.bridge"))
    assert result.returncode == 0, result.stderr[-2000:]
    [artifact] = json.loads((tmp_path / "sq.bridge" / "manifest.json").read_text())["artifacts"]
    assert artifact["candidate"] == "trace" and artifact["check"]["passed"]
    assert artifact["options"]["target_opset"] == 17
    assert any("Dropout" in note for note in artifact["notes"]) and any("folded" in note for note in artifact["notes"])
