"""tf -> tf-serving: a SavedModel laid out as TF Serving loads it, with warm-up records of the fixed inputs.

``DIR/tf-serving/model/1/`` holds ``saved_model.pb``, ``variables/`` and
``assets.extra/tf_serving_warmup_requests``: a TFRecord file of ``PredictionLog`` protos (TF Serving
API), one ``PredictRequest`` per sample of the fixed inputs verify uses by default (seed
`bridge.defaults.SEED`, `bridge.defaults.SAMPLES` samples; integers below `CHECK_INT_HIGH`), in the
SavedModel's layout. TF Serving
replays them when it loads a version; bridge's ``tf-serving`` runtime replays them too.

The ``serving_default`` signature keeps the source's input and output names: when the parent's
names differ (a converter renamed them), the SavedModel is saved again with a signature that
renames them around the parent's; otherwise the parent is copied as it is.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.defaults import CHECK_INT_HIGH, SAMPLES, SEED
from bridge.errors import NotApplicableError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.runtimes.serving_layout import WARMUP
from bridge.signature import Signature, TensorSpec, carry_layout

MODEL_NAME = "model"
VERSION = "1"
_TF_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def fixed_inputs(signature: Signature, samples: int = SAMPLES, seed: int = SEED) -> list[dict[str, Any]]:
    """verify's default inputs (generated from the source's shapes), one dict per sample in `signature`'s layout.

    Integers stay below `CHECK_INT_HIGH` (as convert's checks do): the hop does not know an embedding's size,
    and a token id past it would make the server refuse the version at load.
    """
    from bridge.inputs import generate
    from bridge.verification.compare import from_source_layout

    source = Signature(tuple(TensorSpec(s.source_name, s.source_shape, s.dtype) for s in signature.inputs))
    generated = generate(source, seed=seed, samples=samples, int_high=CHECK_INT_HIGH)
    laid = {s.name: from_source_layout(generated[s.source_name], s.perm, leading=1) for s in signature.inputs}
    return [{name: array[i] for name, array in laid.items()} for i in range(samples)]


def write_warmup(path: Path, samples: list[dict[str, Any]], model_name: str = MODEL_NAME) -> None:
    """One PredictionLog(PredictRequest) per sample, serving_default, as TF Serving reads them at load."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for feeds in samples:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
            for name, array in feeds.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _renamed(src: Path, target: Path, signature: Signature) -> None:
    """Save `src` again with a serving_default that takes and returns the source's names."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(src))
    inner = loaded.signatures["serving_default"]
    specs = [tf.TensorSpec([d if isinstance(d, int) else None for d in s.shape], tf.as_dtype(s.dtype), name=s.source_name)
             for s in signature.inputs]

    @tf.function(input_signature=specs)  # type: ignore[untyped-decorator]
    def serve(*args: Any) -> dict[str, Any]:
        result = inner(**{s.name: a for s, a in zip(signature.inputs, args, strict=True)})
        return {s.source_name: result[s.name] for s in signature.outputs}

    module = tf.Module()
    module.inner = loaded
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})


class TfToTfServing(Hop):
    def convert(self, job: HopJob) -> HopResult:
        root = job.out_dir / MODEL_NAME
        version = root / VERSION
        tensors = (*job.signature.inputs, *job.signature.outputs)
        same = all(t.name == t.source_name for t in tensors)
        unusable = [t.source_name for t in tensors if not _TF_NAME.match(t.source_name)]
        if unusable:
            raise NotApplicableError(f"{job.src}: the source's tensor names {unusable[:3]} are not valid TensorFlow names, "
                                     "so a serving_default signature cannot carry them")
        if same:
            shutil.copytree(job.src, version, ignore=shutil.ignore_patterns(str(WARMUP.parent)))
        else:
            _renamed(job.src, version, job.signature)
        samples = fixed_inputs(job.signature)
        write_warmup(version / WARMUP, samples)
        child = read_signature(Format.TF_SERVING, root)
        parent = job.signature if same else Signature(tuple(replace(t, name=t.source_name) for t in job.signature.inputs),
                                                      tuple(replace(t, name=t.source_name) for t in job.signature.outputs))
        options = {"model_name": MODEL_NAME, "version": int(VERSION), "signature": "serving_default", "tags": ["serve"],
                   "warmup": {"file": str(WARMUP), "records": len(samples), "seed": SEED, "int_high": CHECK_INT_HIGH},
                   "renamed": not same}
        notes = () if same else ("serving_default saved again with the source's tensor names",)
        return HopResult((Produced(root, carry_layout(parent, child)),), options=options, notes=notes)
