"""manifest.json: what it records, perm for channels-last tensors, integrity fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.manifest import Manifest, sha256_of

pytestmark = pytest.mark.slow


def test_manifest_fields_and_hashes(converted_cnn: Path) -> None:
    data = json.loads((converted_cnn / "manifest.json").read_text())
    source = data["source"]
    assert source["format"] == "torch" and source["kind"] == "exported_program"
    assert source["sha256"] == hashlib.sha256(Path(source["path"]).read_bytes()).hexdigest()
    assert data["bridge_version"] and data["tool_versions"]["torch"]
    for artifact in data["artifacts"]:
        for key in ("format", "path", "sha256", "bytes", "made_from", "hop", "tool", "seconds", "options", "inputs", "outputs"):
            assert key in artifact
        digest, size = sha256_of(converted_cnn / artifact["path"])
        assert (digest, size) == (artifact["sha256"], artifact["bytes"])
        for tensor in artifact["inputs"] + artifact["outputs"]:
            assert set(tensor) == {"name", "source_name", "shape", "dtype", "perm", "quantization"}
            assert tensor["quantization"] is None  # [scale, zero_point] for a quantized model's int8 inputs and outputs
    # Route order: a parent always comes before the artifacts made from it.
    formats = [a["format"] for a in data["artifacts"]]
    assert formats.index("onnx") < formats.index("tflite")
    assert Manifest.read(converted_cnn).artifact("tflite").made_from.value == "onnx"


def test_nchw_conv_model_gets_channels_last_perm_in_tflite(converted_cnn: Path) -> None:
    manifest = Manifest.read(converted_cnn)
    source_input = manifest.source.signature.inputs[0]
    assert source_input.shape == (1, 1, 28, 28)
    tflite_input = manifest.artifact("tflite").signature.inputs[0]
    assert tflite_input.shape == (1, 28, 28, 1)
    assert tflite_input.perm == (0, 2, 3, 1)
    assert tflite_input.source_name == source_input.name
    assert manifest.artifact("onnx").signature.inputs[0].perm == (0, 1, 2, 3)
    # Class scores stay rank 2, untouched.
    assert manifest.artifact("tflite").signature.outputs[0].perm == (0, 1)


def test_rank3_conv1d_perm(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> None:
    out = convert_once(zoo_model("conv1d"), "--to", "tflite")
    manifest = Manifest.read(out)
    tflite = manifest.artifact("tflite").signature
    source = manifest.source.signature
    assert source.inputs[0].shape == (1, 4, 32)
    assert tflite.inputs[0].shape == (1, 32, 4) and tflite.inputs[0].perm == (0, 2, 1)
    # Whatever layout onnx2tf chose for the rank-3 output, perm maps the source shape onto it.
    out_spec = tflite.outputs[0]
    assert tuple(source.outputs[0].shape[p] for p in out_spec.perm) == out_spec.shape


def test_keras_source_is_channels_last_already(converted_keras: Path) -> None:
    manifest = Manifest.read(converted_keras)
    assert manifest.source.signature.inputs[0].shape[1:] == (28, 28, 1)
    for artifact in manifest.artifacts:
        assert artifact.signature.inputs[0].perm == (0, 1, 2, 3), artifact.key


def test_dynamic_batch_is_symbolic_where_the_hops_allow(zoo_model: Callable[[str], Path],
                                                       convert_once: Callable[..., Path]) -> None:
    out = convert_once(zoo_model("dynamic_batch"), "--to", "onnx", "--dynamic-batch")
    manifest = Manifest.read(out)
    assert isinstance(manifest.source.signature.inputs[0].shape[0], str)
    onnx_input = manifest.artifact("onnx").signature.inputs[0]
    assert isinstance(onnx_input.shape[0], str), onnx_input
    assert manifest.artifact("onnx").options["dynamic_batch"] is True
