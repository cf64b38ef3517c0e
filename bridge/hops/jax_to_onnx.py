"""jax -> onnx with jax2onnx, which traces the Python function: the factory the user named is built again.

A ``.jaxexport`` holds StableHLO, which jax2onnx cannot read, so this hop needs the source's code
(`HopJob.code`, from the command line, never from a folder). What the factory builds now is
run beside the source artifact on one seeded input and must give the same outputs: a factory whose
weights come from an unseeded random key would otherwise be converted into a different model.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

from bridge.errors import HopError, NotApplicableError
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.onnxruntime_runner import onnx_signature
from bridge.signature import carry_layout


@dataclass(frozen=True)
class JaxToOnnxOptions:
    opset: int
    dynamic_batch: bool
    input_names: list[str]
    output_names: list[str]


class JaxToOnnx(Hop):
    def convert(self, job: HopJob) -> HopResult:
        if job.code is None:
            raise NotApplicableError(
                f"{job.src.name}: jax2onnx converts the Python function, which a .jaxexport does not hold (only StableHLO); "
                "convert from the package.module:factory that builds the model")
        import jax
        import onnx
        from jax2onnx import to_onnx

        from bridge import defaults
        from bridge.hops.jax_model import as_jax_model, named_function, same_model
        from bridge.sources import factory_example_inputs, load_factory

        reference = job.code.reference
        sys.path[:0] = [str(p) for p in job.code.import_paths]
        specs = job.code.example_inputs or factory_example_inputs(reference)  # as materialize chose them
        model = as_jax_model(load_factory(reference), specs, reference)
        function, output_names = named_function(model)
        if not same_model(model, function, job.src):
            raise HopError(f"{reference}: built a different model this time than {job.src.name} (weights from an unseeded "
                           "random key, or code that changed); make the factory deterministic, e.g. jax.random.key(0)")
        input_names = sorted(s.name for s in model.specs.specs)
        by_name = {s.name: s for s in model.specs.specs}

        def positional(*arrays: object) -> tuple[object, ...]:
            result = function(dict(zip(input_names, arrays, strict=True)))
            return tuple(result[n] for n in output_names)

        inputs = [jax.ShapeDtypeStruct(("B", *by_name[n].shape[1:]) if job.options.dynamic_batch and by_name[n].shape
                                       else by_name[n].shape, by_name[n].dtype) for n in input_names]
        options = JaxToOnnxOptions(job.options.opset or defaults.ONNX_OPSET, job.options.dynamic_batch, input_names, output_names)
        try:
            proto = to_onnx(positional, inputs, model_name="bridge_jax", opset=options.opset,
                            input_names=input_names, output_names=output_names)
        except NotImplementedError as exc:  # a primitive jax2onnx has no plugin for
            raise HopError(f"jax2onnx cannot convert {reference}: {str(exc).strip().splitlines()[0][:300]}") from exc
        notes = drop_stale_shapes(proto)
        out = job.out_dir / "model.onnx"
        onnx.save(proto, str(out))
        signature = carry_layout(job.signature, onnx_signature(proto))
        return HopResult((Produced(out, signature),), options=asdict(options), notes=notes)


def drop_stale_shapes(proto: Any) -> tuple[str, ...]:
    """Remove the intermediate shapes (``value_info``) when ONNX's shape inference disagrees with them.

    jax2onnx's layout pass removes transposes around convolutions but can leave the shapes it had
    recorded in the other layout: onnxruntime then refuses the model. The shapes are annotations;
    without them onnxruntime infers its own.
    """
    import onnx

    try:
        onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        return ()
    except onnx.shape_inference.InferenceError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        del proto.graph.value_info[:]
        return (f"jax2onnx's intermediate shapes disagreed with ONNX shape inference ({first}); removed them",)
