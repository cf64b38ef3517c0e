"""onnx -> keras with onnx2tf: the Keras model its tf_converter backend builds, saved as a ``.keras`` archive.

onnx2tf builds its model with tf_keras (Keras 2: TensorFlow operations as ``TFOpLambda`` layers, which
name a TensorFlow function and carry no Python code), so the archive loads with tf_keras and
``safe_mode`` on (bridge.runtimes.tensorflow_runner.load_keras). Layouts as onnx -> tf: onnx2tf
makes rank 3-5 inputs channels-last, recorded as each tensor's perm.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

from bridge.errors import HopError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import TF_CONVERTER, channels_last_outputs, hop_perms, inputs_kept_by_rule, run_onnx2tf
from bridge.runtimes.base import read_signature
from bridge.signature import Signature, carry_layout

WRITTEN = "model_float32_v3.keras"


class OnnxToKeras(Hop):
    def convert(self, job: HopJob) -> HopResult:
        work = job.out_dir / "onnx2tf"
        run = run_onnx2tf(job.src, work, saved_model=False, backend=TF_CONVERTER, keras=True)
        if not (work / WRITTEN).is_file():
            raise HopError(f"onnx2tf wrote no Keras model for {job.src.name} (its log says why)")
        target = job.out_dir / "model.keras"
        shutil.move(work / WRITTEN, target)
        channels_last = channels_last_outputs(work)
        shutil.rmtree(work)
        child = read_signature(Format.KERAS, target)
        parent = by_position(job.signature, child)
        perms, notes = hop_perms(parent, child, channels_last, inputs_kept_by_rule(job.src), "onnx->keras")
        return HopResult((Produced(target, carry_layout(parent, child, perms)),), options=run.kwargs, notes=notes)


def by_position(parent: Signature, child: Signature) -> Signature:
    """`parent` with each output the child names differently (a Keras model's outputs are ``output_0``... in the
    ONNX graph's order, whatever the ONNX names were: ``logits``) renamed to the child's name at its position."""
    names = {spec.name for spec in parent.outputs}
    if len(parent.outputs) != len(child.outputs):
        return parent
    renamed = tuple(mine if theirs.name in names else replace(mine, name=theirs.name)
                    for mine, theirs in zip(parent.outputs, child.outputs, strict=True))
    return Signature(parent.inputs, renamed)
