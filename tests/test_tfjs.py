"""TF.js: a SavedModel converted with the tensorflowjs converter (installed without its conflicting dependencies,
beside a small stand-in for decision forests) and run in Node.js on TF.js's CPU and WebAssembly backends: two
runtimes of one format, two rows in the report, latency measured in JavaScript (tests/test_serving.py runs them)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.conversion import parse_targets
from bridge.formats import Format
from bridge.registry import DEFAULT_REGISTRY
from bridge.runtimes.tfjs_runner import missing

pytestmark = [pytest.mark.skipif(bool(missing()), reason=f"TF.js runners unavailable: {missing()}")]
# The graph model run in Node.js on both backends, with the other deployment targets: tests/test_serving.py.


def test_fully_connected_weights_are_stored_untransposed_where_used_once(tmp_path: Path) -> None:
    """TF.js's WebAssembly backend adds a transposed fully connected layer's bias once per 48 columns (docs/tfjs.md):
    the hop stores such a weight transposed back and clears transpose_b; a weight two nodes share is left alone."""
    import numpy as np

    from bridge.hops.tf_to_tfjs import untranspose_fused_matmuls

    w1, w2 = np.arange(6, dtype="<f4").reshape(2, 3), np.arange(8, dtype="<f4").reshape(2, 4)
    bias = np.ones(2, dtype="<f4")

    def fused(name: str, weight: str) -> dict[str, object]:
        return {"name": name, "op": "_FusedMatMul", "input": ["x", weight, "b"],
                "attr": {"transpose_b": {"b": True}, "transpose_a": {"b": False}}}

    nodes = [fused("fc1", "w1"), fused("fc2", "w2"), {"name": "other", "op": "Identity", "input": ["w2"]}]
    specs = [{"name": "w1", "shape": [2, 3], "dtype": "float32"}, {"name": "b", "shape": [2], "dtype": "float32"},
             {"name": "w2", "shape": [2, 4], "dtype": "float32"}]
    data = w1.tobytes() + bias.tobytes() + w2.tobytes()
    (tmp_path / "group1-shard1of2.bin").write_bytes(data[:20])  # a weight split across two shards
    (tmp_path / "group1-shard2of2.bin").write_bytes(data[20:])
    document = {"format": "graph-model", "modelTopology": {"node": nodes},
                "weightsManifest": [{"paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"], "weights": specs}]}
    (tmp_path / "model.json").write_text(json.dumps(document))

    assert untranspose_fused_matmuls(tmp_path) == ["fc1"]
    after = json.loads((tmp_path / "model.json").read_text())
    fc1, fc2 = after["modelTopology"]["node"][:2]
    assert fc1["attr"]["transpose_b"] == {"b": False} and fc2["attr"]["transpose_b"] == {"b": True}
    assert [w["shape"] for w in after["weightsManifest"][0]["weights"]] == [[3, 2], [2], [2, 4]]
    stored = (tmp_path / "group1-shard1of2.bin").read_bytes() + (tmp_path / "group1-shard2of2.bin").read_bytes()
    assert stored == w1.T.copy().tobytes() + bias.tobytes() + w2.tobytes()
    assert (tmp_path / "group1-shard1of2.bin").stat().st_size == 20


def test_all_leaves_tfjs_and_keras_to_be_named() -> None:
    assert parse_targets("all", Format.TORCH, DEFAULT_REGISTRY) == (Format.ONNX, Format.TF, Format.TFLITE)
    assert parse_targets("all,tfjs,keras", Format.TORCH, DEFAULT_REGISTRY)[-2:] == (Format.TFJS, Format.KERAS)
    assert parse_targets("tfjs", Format.TORCH, DEFAULT_REGISTRY) == (Format.TFJS,)


def test_the_decision_forests_stand_in_lives_only_while_tensorflowjs_is_imported() -> None:
    code = textwrap.dedent("""
        import sys
        from bridge.hops.tf_to_tfjs import SHIM, decision_forests_shim
        with decision_forests_shim():
            import tensorflowjs.converters.tf_saved_model_conversion_v2 as tfjs
            assert SHIM in sys.modules
        assert SHIM not in sys.modules and callable(tfjs.convert_tf_saved_model)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "ok", result.stderr[-2000:]
