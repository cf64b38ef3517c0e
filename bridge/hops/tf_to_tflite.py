"""tf -> tflite with TensorFlow's own TFLite converter (``tf.lite.TFLiteConverter.from_saved_model``)."""

from __future__ import annotations

from pathlib import Path

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.signature import Signature, carry_layout

SIGNATURE_KEYS = ["serving_default"]


def saved_model_to_tflite(saved_model: Path, target: Path, parent: Signature, precision: str) -> Produced:
    """Convert a SavedModel's serving_default to TFLite; ``float16`` stores float16 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=SIGNATURE_KEYS)
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    target.write_bytes(converter.convert())
    return Produced(target, carry_layout(parent, read_signature(Format.TFLITE, target)), precision)


def tflite_name(precision: str) -> str:
    return "model.tflite" if precision == "float32" else f"model_{precision}.tflite"


class TfToTflite(Hop):
    def convert(self, job: HopJob) -> HopResult:
        precisions = ("float32", "float16") if job.options.fp16 else ("float32",)
        produced = tuple(saved_model_to_tflite(job.src, job.out_dir / tflite_name(p), job.signature, p) for p in precisions)
        return HopResult(produced, options={"signature_keys": SIGNATURE_KEYS, "fp16": job.options.fp16})
