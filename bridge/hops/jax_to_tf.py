"""jax -> tf with jax2tf: the ``.jaxexport`` wrapped in a ``tf.function`` and saved as a SavedModel.

jax2tf (native serialization) keeps the StableHLO inside one ``XlaCallModule`` op: TensorFlow and
its TFLite converter run it, tf2onnx and TF.js cannot read it (docs/jax.md). Works from the
artifact alone: no Python code from the source runs.
"""

from __future__ import annotations

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.runtimes.jax_runner import load_exported
from bridge.signature import carry_layout

NOTE = ("jax2tf keeps the model as StableHLO inside an XlaCallModule op: TensorFlow and its TFLite converter run it, "
        "tf2onnx and TF.js cannot read it")


class JaxToTf(Hop):
    def convert(self, job: HopJob) -> HopResult:
        import jax
        import tensorflow as tf
        from jax.experimental import jax2tf

        exported = load_exported(job.src)
        names = [s.name for s in job.signature.inputs]
        arguments = jax.tree_util.tree_unflatten(exported.in_tree, names)[0]
        # A symbolic dimension (--dynamic-batch's ``b``) must be declared again to jax2tf, per argument leaf.
        shapes = {s.name: "(" + ", ".join(str(d) for d in a.shape) + ")" for s, a in zip(job.signature.inputs, exported.in_avals,
                                                                                       strict=True)}
        polymorphic = [jax.tree_util.tree_map(lambda n: shapes[n], a) for a in arguments]
        converted = jax2tf.convert(exported.call, with_gradient=False, polymorphic_shapes=polymorphic,
                                   native_serialization_platforms=("cpu",))

        def serve(*tensors: object) -> object:
            by_name = dict(zip(names, tensors, strict=True))
            return converted(*(jax.tree_util.tree_map(lambda n: by_name[n], arguments)))

        specs = [tf.TensorSpec([d if isinstance(d, int) else None for d in s.shape], s.dtype, name=s.name)
                 for s in job.signature.inputs]
        module = tf.Module()
        module.serve = tf.function(serve, input_signature=specs, autograph=False)
        target = job.out_dir / "saved_model"
        tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve})
        child = read_signature(Format.TF, target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),),
                         options={"native_serialization_platforms": ["cpu"], "with_gradient": False}, notes=(NOTE,))
