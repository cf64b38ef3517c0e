"""tf -> onnx with tf2onnx (the SavedModel's serving_default signature)."""

from __future__ import annotations

from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.tf2onnx_common import saved_model_to_onnx
from bridge.signature import carry_layout


class TfToOnnx(Hop):
    def convert(self, job: HopJob) -> HopResult:
        out = job.out_dir / "model.onnx"
        child, options = saved_model_to_onnx(job.src, out, job.options.opset)
        return HopResult((Produced(out, carry_layout(job.signature, child)),), options=options)
