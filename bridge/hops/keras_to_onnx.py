"""keras -> onnx with tf2onnx. tf2onnx's ``from_keras`` breaks on Keras 3 models, so the model is
exported to a SavedModel first (kept out of the artifacts) and converted from there."""

from __future__ import annotations

import shutil

from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.keras_to_tf import export_saved_model
from bridge.hops.tf2onnx_common import saved_model_to_onnx
from bridge.signature import carry_layout


class KerasToOnnx(Hop):
    def convert(self, job: HopJob) -> HopResult:
        staging = job.out_dir / "keras_saved_model"
        export_saved_model(job.src, staging, trust_code=job.options.trust_code)
        out = job.out_dir / "model.onnx"
        child, options = saved_model_to_onnx(staging, out, job.options.opset)
        shutil.rmtree(staging)
        return HopResult((Produced(out, carry_layout(job.signature, child)),), options={**options, "via": "keras model.export"})
