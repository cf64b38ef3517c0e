"""keras -> tf: Keras 3's own ``model.export`` writes a SavedModel with a serving_default signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.runtimes.tensorflow_runner import load_keras
from bridge.signature import carry_layout


def export_saved_model(keras_path: Path, target: Path, *, trust_code: bool) -> Any:
    model = load_keras(keras_path, trust_code=trust_code)
    model.export(str(target), format="tf_saved_model", verbose=False)
    return model


class KerasToTf(Hop):
    def convert(self, job: HopJob) -> HopResult:
        target = job.out_dir / "saved_model"
        export_saved_model(job.src, target, trust_code=job.options.trust_code)
        child = read_signature(Format.TF, target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options={"format": "tf_saved_model"})
