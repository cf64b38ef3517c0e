"""tf -> tflite with TensorFlow's own TFLite converter (``tf.lite.TFLiteConverter.from_saved_model``)."""

from __future__ import annotations

from pathlib import Path

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.options import ConvertOptions
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


def float_precisions(options: ConvertOptions) -> tuple[str, ...]:
    """float32, and float16 with --fp16 (``--quantize fp16`` is made by `quantized_from_saved_model`)."""
    fp16 = options.fp16 and not (Format.TFLITE in options.quantize_formats and "fp16" in options.quantize)
    return ("float32", "float16") if fp16 else ("float32",)


def quantized_from_saved_model(saved_model: Path, out_dir: Path, through: Signature, options: ConvertOptions) -> list[Produced]:
    """The TFLite artifacts --quantize asks for (dynamic, int8, int8-io, fp16: float16 weights, float32 compute),
    made from the SavedModel by TensorFlow's converter."""
    from bridge.quantize import schemes_for, tflite_from_saved_model

    if Format.TFLITE not in options.quantize_formats:
        return []
    schemes = schemes_for(Format.TFLITE, options.quantize)
    return [tflite_from_saved_model(saved_model, out_dir / tflite_name(s), through, s, options) for s in schemes]


class TfToTflite(Hop):
    def convert(self, job: HopJob) -> HopResult:
        precisions = float_precisions(job.options)
        produced = [saved_model_to_tflite(job.src, job.out_dir / tflite_name(p), job.signature, p) for p in precisions]
        produced += quantized_from_saved_model(job.src, job.out_dir, job.signature, job.options)
        return HopResult(tuple(produced), options={"signature_keys": SIGNATURE_KEYS, "fp16": "float16" in precisions})
