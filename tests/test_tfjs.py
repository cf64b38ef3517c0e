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

from bridge.formats import Format
from bridge.registry import DEFAULT_REGISTRY
from bridge.route import parse_targets
from bridge.runtimes.tfjs_runner import missing

pytestmark = [pytest.mark.skipif(bool(missing()), reason=f"TF.js runners unavailable: {missing()}")]
# The graph model run in Node.js on both backends, with the other deployment targets: tests/test_serving.py.


def _graph_model(folder: Path, nodes: list[dict[str, object]], weights: list[tuple[dict[str, object], bytes]],
                 split: int) -> None:
    data = b"".join(d for _, d in weights)
    (folder / "group1-shard1of2.bin").write_bytes(data[:split])  # a weight split across two shards
    (folder / "group1-shard2of2.bin").write_bytes(data[split:])
    document = {"format": "graph-model", "modelTopology": {"node": nodes},
                "weightsManifest": [{"paths": ["group1-shard1of2.bin", "group1-shard2of2.bin"], "weights": [s for s, _ in weights]}]}
    (folder / "model.json").write_text(json.dumps(document))


def _stored(folder: Path) -> tuple[dict[str, object], bytes]:
    document = json.loads((folder / "model.json").read_text())
    return document, b"".join((folder / name).read_bytes() for name in document["weightsManifest"][0]["paths"])


def test_fully_connected_weights_are_stored_untransposed_where_used_once(tmp_path: Path) -> None:
    """TF.js's WebAssembly backend adds a transposed fully connected layer's bias once per 48 columns (docs/tfjs.md):
    the hop stores such a weight transposed back and clears transpose_b; a weight two nodes share is left alone."""
    import numpy as np

    from bridge.hops.tfjs_portable import make_portable

    w1, w2 = np.arange(6, dtype="<f4").reshape(2, 3), np.arange(8, dtype="<f4").reshape(2, 4)
    bias = np.ones(2, dtype="<f4")

    def fused(name: str, weight: str) -> dict[str, object]:
        return {"name": name, "op": "_FusedMatMul", "input": ["x", weight, "b"],
                "attr": {"transpose_b": {"b": True}, "transpose_a": {"b": False}}}

    nodes = [fused("fc1", "w1"), fused("fc2", "w2"), {"name": "other", "op": "Identity", "input": ["w2"]}]
    _graph_model(tmp_path, nodes, [({"name": "w1", "shape": [2, 3], "dtype": "float32"}, w1.tobytes()),
                                   ({"name": "b", "shape": [2], "dtype": "float32"}, bias.tobytes()),
                                   ({"name": "w2", "shape": [2, 4], "dtype": "float32"}, w2.tobytes())], split=20)

    assert make_portable(tmp_path, shard_bytes=16) == {"untransposed": ["fc1"], "bias_expanded": []}
    after, stored = _stored(tmp_path)
    fc1, fc2 = after["modelTopology"]["node"][:2]  # type: ignore[index]
    assert fc1["attr"]["transpose_b"] == {"b": False} and fc2["attr"]["transpose_b"] == {"b": True}
    assert [w["shape"] for w in after["weightsManifest"][0]["weights"]] == [[3, 2], [2], [2, 4]]  # type: ignore[index]
    assert stored == w1.T.copy().tobytes() + bias.tobytes() + w2.tobytes()
    assert after["weightsManifest"][0]["paths"] == [f"group1-shard{i}of4.bin" for i in range(1, 5)]  # type: ignore[index]
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == [f"group1-shard{i}of4.bin" for i in range(1, 5)]


def test_a_convolutions_scalar_bias_is_stored_per_channel(tmp_path: Path) -> None:
    """Conv2D + AddV2(3.0), as hard-swish is written, fuses to a rank-0 bias that the WebAssembly backend refuses."""
    import numpy as np

    from bridge.hops.tfjs_portable import make_portable

    conv = {"name": "add_1", "op": "_FusedConv2D", "input": ["x", "f", "three"], "attr": {}}
    depthwise = {"name": "dw", "op": "FusedDepthwiseConv2dNative", "input": ["x", "d", "three"], "attr": {}}
    three = np.float32(3.0).tobytes()
    _graph_model(tmp_path, [conv, depthwise], [
        ({"name": "f", "shape": [1, 1, 2, 5], "dtype": "float32"}, np.zeros(10, "<f4").tobytes()),
        ({"name": "d", "shape": [3, 3, 4, 2], "dtype": "float32"}, np.zeros(72, "<f4").tobytes()),
        ({"name": "three", "shape": [], "dtype": "float32"}, three)], split=8)
    assert make_portable(tmp_path, shard_bytes=4 * 1024 * 1024) == {"untransposed": [], "bias_expanded": ["add_1", "dw"]}
    after, stored = _stored(tmp_path)
    nodes = {n["name"]: n for n in after["modelTopology"]["node"]}  # type: ignore[index]
    assert nodes["add_1"]["input"][2] == "add_1/bridge_bias" and nodes["add_1/bridge_bias"]["op"] == "Const"
    specs = {w["name"]: w for w in after["weightsManifest"][0]["weights"]}  # type: ignore[index]
    assert specs["add_1/bridge_bias"]["shape"] == [5] and specs["dw/bridge_bias"]["shape"] == [8]
    assert stored.endswith(np.full(5, 3.0, "<f4").tobytes() + np.full(8, 3.0, "<f4").tobytes())


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
