"""torch -> onnx with ``torch.onnx.export``: its candidates (bridge/registry.py) choose the exporter and decomposition."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bridge import defaults
from bridge.errors import HopError
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.onnxruntime_runner import onnx_signature
from bridge.signature import TensorSpec, carry_layout


@dataclass(frozen=True)
class TorchToOnnxOptions:
    opset: int
    dynamic_batch: bool
    external_data: bool
    exporter: str
    """``dynamo`` (torch.onnx.export(dynamo=True)) or ``torchscript`` (dynamo=False), from the candidate."""
    decompose: bool
    """The ExportedProgram was lowered with run_decompositions() before export (candidate dynamo-decomposed)."""


def _names(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> dict[str, list[str]]:
    return {"input_names": [s.name for s in inputs], "output_names": [s.name for s in outputs]}


def _export_dynamo(model: Any, args: tuple[Any, ...], out: Path, options: TorchToOnnxOptions,
                   inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...], *, from_program: bool) -> None:
    import torch

    dynamic_shapes = None
    if options.dynamic_batch and not from_program:  # a program keeps the shapes it was exported with
        dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in inputs)
    onnx_program = torch.onnx.export(
        model, () if from_program else args, dynamo=True, opset_version=options.opset,
        dynamic_shapes=dynamic_shapes, verbose=False, **_names(inputs, outputs),
    )
    assert onnx_program is not None
    onnx_program.save(str(out), external_data=options.external_data)


def _export_torchscript(module: Any, args: tuple[Any, ...], out: Path, options: TorchToOnnxOptions,
                        inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    import torch

    dynamic_axes = {s.name: {0: "batch"} for s in (*inputs, *outputs)} if options.dynamic_batch else None
    torch.onnx.export(
        module, args, str(out), dynamo=False, opset_version=min(options.opset, defaults.TORCHSCRIPT_MAX_OPSET),
        dynamic_axes=dynamic_axes, **_names(inputs, outputs),
    )


def _holds_bfloat16(module: Any, inputs: tuple[TensorSpec, ...]) -> bool:
    import torch

    return any(s.dtype == "bfloat16" for s in inputs) or any(t.dtype == torch.bfloat16 for t in module.state_dict().values()
                                                             if isinstance(t, torch.Tensor))


def _as_float32(module: Any, program: Any, inputs: tuple[TensorSpec, ...]) -> tuple[Any, Any, tuple[TensorSpec, ...], str]:
    """A bfloat16 `module` (the program's own, when there is one) as float32: onnxruntime's CPU kernels (Gemm, MatMul)
    and onnx2tf have no bfloat16, so an ONNX file in it runs nowhere bridge goes next. The weights are widened exactly;
    the check against the bfloat16 source then measures the source's own rounding, judged by the bfloat16 tolerance
    (bridge.defaults.TOLERANCES)."""
    import torch

    widened = module.to(torch.float32)
    specs = tuple(replace(s, dtype="float32") if s.dtype == "bfloat16" else s for s in inputs)
    if program is not None:
        from bridge.runtimes.torch_runner import example_tensors

        program = torch.export.export(widened, example_tensors(specs))
    return widened, program, specs, ("bfloat16 weights and inputs widened to float32 (onnxruntime's CPU kernels and onnx2tf "
                                     "have no bfloat16); judged against the bfloat16 source with its tolerance")


class TorchToOnnx(Hop):
    def convert(self, job: HopJob) -> HopResult:
        import onnx

        from bridge.runtimes.torch_runner import example_tensors, load_module

        module, _, program = load_module(job.src, trust_pickle=job.options.trust_pickle)
        inputs, outputs = job.signature.inputs, job.signature.outputs
        cast_note = ""
        runnable = program.module() if program is not None else module
        if _holds_bfloat16(runnable, inputs):
            module, program, inputs, cast_note = _as_float32(runnable, program, inputs)
        args = example_tensors(inputs)
        weight_bytes = sum(p.numel() * p.element_size() for p in module.state_dict().values() if hasattr(p, "numel"))
        settings = job.candidate.settings
        options = TorchToOnnxOptions(
            opset=job.options.opset or defaults.ONNX_OPSET,
            dynamic_batch=job.options.dynamic_batch,
            external_data=weight_bytes >= defaults.external_data_threshold(),
            exporter=str(settings.get("exporter", "dynamo")),
            decompose=bool(settings.get("decompose", False)),
        )
        out = job.out_dir / "model.onnx"
        if options.exporter == "torchscript":
            if program is not None:
                # The program's module runs as the program does; the TorchScript exporter traces it. Such a
                # module refuses train(), which the exporter calls to switch to eval: it is in eval already.
                module = program.module()
                module.train = lambda mode=True: module
            _export_torchscript(module, args, out, options, inputs, outputs)
        else:
            if options.decompose and program is not None:
                program = program.run_decompositions()
            elif options.decompose:
                raise HopError(f"{job.src}: dynamo-decomposed works on an ExportedProgram (.pt2); this is a {job.src.suffix} file")
            _export_dynamo(program if program is not None else module, args, out, options, inputs, outputs,
                           from_program=program is not None)
        model = onnx.load(str(out), load_external_data=False)
        signature = carry_layout(job.signature, onnx_signature(model))
        notes = [cast_note] if cast_note else []
        if options.dynamic_batch and any(isinstance(s.shape[0], int) for s in signature.inputs if s.rank):
            notes.append("--dynamic-batch: the batch dimension stayed static in the ONNX graph "
                         "(a .pt2 keeps the shapes it was exported with; export it with a dynamic batch Dim)")
        return HopResult((Produced(out, signature),), options=asdict(options), notes=tuple(notes))
