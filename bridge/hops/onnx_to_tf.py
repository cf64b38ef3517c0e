"""onnx -> tf (SavedModel) with onnx2tf: its ``flatbuffer_direct`` backend's SavedModel output, its
``tf_converter`` backend, or a static-shape conversion; the hop's candidates (bridge/registry.py) choose."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.formats import Format
from bridge.hops import large_weights
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import channels_last_outputs, example_shapes, hop_perms, inputs_kept_by_rule, run_onnx2tf
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout

_SAVED_MODEL_PARTS = ("saved_model.pb", "fingerprint.pb", "variables", "assets")


def move_saved_model(work: Path, target: Path) -> Path:
    """Move the SavedModel onnx2tf wrote into `work` to `target`."""
    target.mkdir()
    for part in _SAVED_MODEL_PARTS:
        if (work / part).exists():
            shutil.move(work / part, target / part)
    return target


class OnnxToTf(Hop):
    def convert(self, job: HopJob) -> HopResult:
        settings = job.candidate.settings
        if settings.get("large_weights"):
            return large_weights.convert(job, Format.TF)
        work = job.out_dir / "onnx2tf"
        static = example_shapes(job.signature, job.options.seq_len) if settings.get("static_shapes") else None
        run = run_onnx2tf(job.src, work, saved_model=True, backend=str(settings["backend"]), static_shapes=static,
                          batch_free_reshape=bool(settings.get("batch_free_reshape")))
        target = move_saved_model(work, job.out_dir / "saved_model")
        channels_last = channels_last_outputs(work)
        shutil.rmtree(work)
        child = read_signature(Format.TF, target)
        perms, notes = hop_perms(job.signature, child, channels_last, inputs_kept_by_rule(job.src), "onnx->tf")
        if static:
            notes = (*notes, "input shapes fixed to " + ", ".join(f"{k} {v}" for k, v in static.items())
                     + " (symbolic dimensions set to the example's): the SavedModel takes that shape only")
        return HopResult((Produced(target, carry_layout(job.signature, child, perms)),), options=run.kwargs, notes=notes)
