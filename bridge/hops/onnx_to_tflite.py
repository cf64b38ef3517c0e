"""onnx -> tflite with onnx2tf: its ``flatbuffer_direct`` or ``tf_converter`` backend, or its SavedModel
followed by TensorFlow's TFLite converter; the hop's candidates (bridge/registry.py) choose."""

from __future__ import annotations

import shutil

from bridge.errors import HopError
from bridge.formats import Format
from bridge.hops import large_weights
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import (
    REPORT_NAME,
    TENSOR_NAMES,
    channels_last_outputs,
    hop_perms,
    inputs_kept_by_rule,
    run_onnx2tf,
    write_name_map,
)
from bridge.hops.onnx_to_tf import move_saved_model
from bridge.hops.tf_to_tflite import float_precisions, quantized_from_saved_model, saved_model_to_tflite, tflite_name
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout


class OnnxToTflite(Hop):
    def convert(self, job: HopJob) -> HopResult:
        settings = job.candidate.settings
        if settings.get("large_weights"):
            return large_weights.convert(job, Format.TFLITE)
        via_saved_model = bool(settings.get("via_saved_model"))
        work = job.out_dir / "onnx2tf"
        quantize = Format.TFLITE in job.options.quantize_formats
        # Quantized TFLite comes from TensorFlow's converter, which needs the SavedModel: onnx2tf writes one too.
        run = run_onnx2tf(job.src, work, saved_model=via_saved_model or quantize, backend=str(settings["backend"]))
        precisions = float_precisions(job.options)
        channels_last = channels_last_outputs(work)
        kept = inputs_kept_by_rule(job.src)
        produced = []
        notes: tuple[str, ...] = ()
        name_map = None
        if via_saved_model:
            saved_model = move_saved_model(work, job.out_dir / "saved_model")
            sm_signature = read_signature(Format.TF, saved_model)
            perms, notes = hop_perms(job.signature, sm_signature, channels_last, kept, "onnx->tflite")
            through = carry_layout(job.signature, sm_signature, perms)
            produced = [saved_model_to_tflite(saved_model, job.out_dir / tflite_name(p), through, p) for p in precisions]
            produced += quantized_from_saved_model(saved_model, job.out_dir, through, job.options)
            shutil.rmtree(saved_model)
        else:
            # The names onnx2tf gave the ONNX tensors it renamed: localisation joins the two graphs with them.
            if write_name_map(work / REPORT_NAME, job.out_dir / TENSOR_NAMES):
                name_map = job.out_dir / TENSOR_NAMES
            for precision in precisions:
                target = job.out_dir / tflite_name(precision)
                shutil.move(work / f"model_{precision}.tflite", target)
                child = read_signature(Format.TFLITE, target)
                perms, notes = hop_perms(job.signature, child, channels_last, kept, "onnx->tflite")
                produced.append(Produced(target, carry_layout(job.signature, child, perms), precision, name_map))
            if quantize:
                if not (work / "saved_model.pb").is_file():
                    raise HopError(f"{job.src}: onnx2tf wrote no SavedModel beside the TFLite, and quantization starts "
                                   "from one; convert without --quantize, or through tf (--via tf)")
                saved_model = move_saved_model(work, job.out_dir / "saved_model")
                sm_signature = read_signature(Format.TF, saved_model)
                perms, _ = hop_perms(job.signature, sm_signature, channels_last, kept, "onnx->tflite")
                through = carry_layout(job.signature, sm_signature, perms)
                produced += quantized_from_saved_model(saved_model, job.out_dir, through, job.options)
                shutil.rmtree(saved_model)
        shutil.rmtree(work)
        options = {**run.kwargs, "fp16": "float16" in precisions}
        if via_saved_model:
            options["then"] = "tf.lite.TFLiteConverter.from_saved_model"
        return HopResult(tuple(produced), options=options, notes=notes)
