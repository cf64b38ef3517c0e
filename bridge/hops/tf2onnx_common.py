"""What the tf2onnx hops share: converting a SavedModel's serving_default signature to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge import defaults
from bridge.errors import NotApplicableError
from bridge.runtimes.onnxruntime_runner import onnx_signature
from bridge.runtimes.tensorflow_runner import SERVING_KEY
from bridge.signature import Signature


def saved_model_to_onnx(saved_model: Path, out: Path, opset: int | None) -> tuple[Signature, dict[str, Any]]:
    """Convert a SavedModel's serving_default to ONNX the way ``python -m tf2onnx.convert --saved-model`` does.

    tf2onnx's own SavedModel loader freezes captured weights into constants (tracing the loaded
    function instead would turn them into graph inputs). tf2onnx keeps TensorFlow's layout (no
    inputs_as_nchw), so every tensor keeps its perm; tensors keep the signature's names.
    """
    from tf2onnx import convert, tf_loader

    options = {"opset": opset or defaults.TF2ONNX_OPSET, "signature_def": SERVING_KEY, "tag": "serve"}
    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(saved_model), None, None, tag=options["tag"], signatures=[SERVING_KEY], return_tensors_to_rename=True
    )
    if any(node.op == "XlaCallModule" for node in graph_def.node):
        raise NotApplicableError(f"{saved_model}: the SavedModel runs StableHLO in an XlaCallModule op (jax2tf writes "
                                 "them), which tf2onnx cannot convert; make the ONNX from the JAX source (jax -> onnx)")
    model, _ = convert.from_graph_def(
        graph_def, input_names=inputs, output_names=outputs, opset=options["opset"],
        tensors_to_rename=renames, output_path=str(out),
    )
    return onnx_signature(model), options
