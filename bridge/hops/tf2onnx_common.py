"""What the tf2onnx hops share: converting a SavedModel's serving_default function to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge import defaults
from bridge.hops.torch_to_onnx import onnx_signature
from bridge.signature import Signature


def saved_model_to_onnx(saved_model: Path, out: Path, opset: int | None) -> tuple[Signature, dict[str, Any]]:
    """Convert a SavedModel's serving_default to ONNX with tf2onnx.from_function.

    tf2onnx keeps TensorFlow's layout (no inputs_as_nchw), so every tensor keeps its perm.
    """
    import tensorflow as tf
    import tf2onnx

    from bridge.runtimes.tensorflow_runner import load_saved_model

    loaded, fn = load_saved_model(saved_model)  # `loaded` owns the variables: keep it alive
    _, kwargs = fn.structured_input_signature
    names = list(kwargs)
    specs = [tf.TensorSpec(kwargs[n].shape, kwargs[n].dtype, name=n) for n in names]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> Any:
        return fn(**dict(zip(names, args)))

    options = {"opset": opset or defaults.TF2ONNX_OPSET, "function": "serving_default"}
    model, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=options["opset"], output_path=str(out))
    del loaded
    return onnx_signature(model), options
