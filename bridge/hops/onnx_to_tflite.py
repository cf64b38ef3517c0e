"""onnx -> tflite with onnx2tf's ``flatbuffer_direct`` backend (``tf_converter`` as recorded fallback)."""

from __future__ import annotations

import shutil

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import channels_last_outputs, hop_perms, inputs_kept_by_rule, run_onnx2tf
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout


class OnnxToTflite(Hop):
    def convert(self, job: HopJob) -> HopResult:
        work = job.out_dir / "onnx2tf"
        run = run_onnx2tf(job.src, work, saved_model=False)
        produced = []
        notes: tuple[str, ...] = ()
        channels_last = channels_last_outputs(work)
        kept = inputs_kept_by_rule(job.src)
        for precision in ("float32", "float16") if job.options.fp16 else ("float32",):
            written = work / f"model_{precision}.tflite"
            target = job.out_dir / ("model.tflite" if precision == "float32" else "model_float16.tflite")
            shutil.move(written, target)
            child = read_signature(Format.TFLITE, target)
            perms, notes = hop_perms(job.signature, child, channels_last, kept, "onnx->tflite")
            produced.append(Produced(target, carry_layout(job.signature, child, perms), precision))
        shutil.rmtree(work)
        return HopResult(tuple(produced), options={**run.kwargs, "fp16": job.options.fp16}, fallback=run.fallback,
                         notes=notes)
