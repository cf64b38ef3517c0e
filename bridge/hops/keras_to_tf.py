"""keras -> tf: Keras 3's own ``model.export`` writes a SavedModel with a serving_default signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.hops.base import Hop, HopJob, HopResult, Produced, carry_layout
from bridge.runtimes.tensorflow_runner import load_keras


def export_saved_model(keras_path: Path, target: Path, *, trust_code: bool) -> Any:
    model = load_keras(keras_path, trust_code=trust_code)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return model


class KerasToTf(Hop):
    distribution = "keras"

    def convert(self, job: HopJob) -> HopResult:
        from bridge.hops.onnx_to_tf import saved_model_signature

        target = job.out_dir / "saved_model"
        export_saved_model(job.src, target, trust_code=job.options.trust_code)
        child = saved_model_signature(target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options={"format": "tf_saved_model"})
