"""tf -> tflite with TensorFlow's own TFLite converter (``tf.lite.TFLiteConverter.from_saved_model``)."""

from __future__ import annotations

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout


class TfToTflite(Hop):
    def convert(self, job: HopJob) -> HopResult:
        import tensorflow as tf

        produced = []
        for precision in ("float32", "float16") if job.options.fp16 else ("float32",):
            converter = tf.lite.TFLiteConverter.from_saved_model(str(job.src), signature_keys=["serving_default"])
            if precision == "float16":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            target = job.out_dir / ("model.tflite" if precision == "float32" else "model_float16.tflite")
            target.write_bytes(converter.convert())
            produced.append(Produced(target, carry_layout(job.signature, read_signature(Format.TFLITE, target)), precision))
        return HopResult(tuple(produced), options={"signature_keys": ["serving_default"], "fp16": job.options.fp16})
