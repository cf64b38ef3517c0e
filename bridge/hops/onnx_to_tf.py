"""onnx -> tf (SavedModel) with onnx2tf: the direct backend's SavedModel output, else ``tf_converter``."""

from __future__ import annotations

import shutil

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import channels_last_outputs, hop_perms, inputs_kept_by_rule, run_onnx2tf
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout

_SAVED_MODEL_PARTS = ("saved_model.pb", "fingerprint.pb", "variables", "assets")


class OnnxToTf(Hop):
    def convert(self, job: HopJob) -> HopResult:
        work = job.out_dir / "onnx2tf"
        run = run_onnx2tf(job.src, work, saved_model=True)
        target = job.out_dir / "saved_model"
        target.mkdir()
        for part in _SAVED_MODEL_PARTS:
            if (work / part).exists():
                shutil.move(work / part, target / part)
        channels_last = channels_last_outputs(work)
        shutil.rmtree(work)
        child = read_signature(Format.TF, target)
        perms, notes = hop_perms(job.signature, child, channels_last, inputs_kept_by_rule(job.src), "onnx->tf")
        return HopResult((Produced(target, carry_layout(job.signature, child, perms)),), options=run.kwargs,
                         fallback=run.fallback, notes=notes)
