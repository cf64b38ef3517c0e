"""tflite -> onnx with tf2onnx's TFLite reader (``tf2onnx.convert.from_tflite``)."""

from __future__ import annotations

from bridge import defaults
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.onnxruntime_runner import onnx_signature
from bridge.signature import carry_layout


class TfliteToOnnx(Hop):
    def convert(self, job: HopJob) -> HopResult:
        import tf2onnx

        out = job.out_dir / "model.onnx"
        opset = job.options.opset or defaults.TF2ONNX_OPSET
        model, _ = tf2onnx.convert.from_tflite(str(job.src), opset=opset, output_path=str(out))
        return HopResult((Produced(out, carry_layout(job.signature, onnx_signature(model))),), options={"opset": opset})
