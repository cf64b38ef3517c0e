"""onnx -> torch with onnx2torch, saved as an ExportedProgram (.pt2) or, as the next candidate, TorchScript (.pt).

onnx2torch 1.5.15 lacks converters for some ops past opset 17 (ReduceMean at 18, which the dynamo
exporter emits), so newer models are first converted down with ``onnx.version_converter``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bridge import defaults
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.large_weights import external_bytes, inline_external
from bridge.runtimes.onnxruntime_runner import load_onnx_checked
from bridge.signature import TensorSpec, carry_layout

SMALL_TENSOR = 1024**2
"""External tensors under this many bytes are read in before the graph is rewritten (shapes and axes among them)."""


def _int64_initializers_as_fields(model: Any) -> None:
    """Store int64 initializers in ``int64_data`` instead of ``raw_data``.

    onnx's version converter reads ReduceMean's ``axes`` input from ``int64_data`` when it turns
    it into an attribute (opset 18 -> 17); torch.onnx writes ``raw_data``, which would leave the
    attribute empty and onnx2torch failing on it.
    """
    from onnx import TensorProto, numpy_helper

    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.INT64 and tensor.raw_data:
            values = numpy_helper.to_array(tensor).ravel().tolist()
            tensor.ClearField("raw_data")
            tensor.int64_data.extend(values)


def _dropouts_as_identity(model: Any) -> bool:
    """Rewrite each inference Dropout (no training_mode input, its mask unused) as an Identity; whether any was."""
    rewritten = False
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:
        mask_asked = len(node.output) > 1 and node.output[1] in used
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx") and len(node.input) <= 2 and not mask_asked:
            node.op_type = "Identity"
            del node.attribute[:]
            del node.input[1:]
            del node.output[1:]
            rewritten = True
    return rewritten


def _reshapes_allowing_zero_dropped(model: Any) -> bool:
    """Clear ``allowzero=1`` (which onnx2torch refuses, and torch.onnx writes on every view) on each Reshape whose
    constant target shape has no 0, where it changes nothing; whether any was."""
    from onnx import helper, numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute
                      if a.name == "value"})
    cleared = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        allowzero = next((a for a in node.attribute if a.name == "allowzero"), None)
        if allowzero is None or helper.get_attribute_value(allowzero) != 1:
            continue
        if 0 not in numpy_helper.to_array(constants[node.input[1]]).ravel().tolist():
            node.attribute.remove(allowzero)
            cleared = True
    return cleared


def _convert_from_file(model: Any, folder: Path, work: Path) -> Any:
    """onnx2torch on a model past protobuf's 2 GB: given a ModelProto it measures it with ``ByteSize()``, which
    protobuf refuses past 2 GB, so it is given a file instead. `model` (its external data not read, the data files
    in `folder`) is saved in `work` beside links to those files (copies across file systems), and removed after."""
    import onnx
    import onnx2torch
    from onnx import external_data_helper

    work.mkdir(parents=True, exist_ok=True)
    try:
        locations = {external_data_helper.ExternalDataInfo(t).location for t in model.graph.initializer if t.external_data}
        for location in locations:  # checked inside `folder` by load_onnx_checked
            (work / location).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(folder / location, work / location)
            except OSError:
                shutil.copyfile(folder / location, work / location)
        onnx.save(model, str(work / "model.onnx"))
        return onnx2torch.convert(work / "model.onnx").eval()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _computes_constants(model: Any) -> bool:
    """Whether some node computes a value from constants alone (other than a Constant node itself)."""
    known = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # in topological order
        if all(not name or name in known for name in node.input):
            if node.op_type != "Constant":
                return True
            known.update(node.output)
    return False


class OnnxToTorch(Hop):
    def convert(self, job: HopJob) -> HopResult:
        import onnx
        import onnx.version_converter
        import onnx2torch
        import torch

        from bridge.runtimes.base import LoadOptions
        from bridge.runtimes.torch_runner import TorchRunner, example_tensors

        # The graph is read without its external data and rewritten (opset lowered) as it is: onnx's version
        # converter and onnxsim serialize the model, which protobuf refuses past 2 GB. The small tensors the
        # rewrites read (shapes, axes) are read in first, the large weights only before onnx2torch.
        model = load_onnx_checked(job.src)
        external = inline_external(model, job.src.parent, below=SMALL_TENSOR)
        # Before IR version 4 every initializer was listed among the graph's inputs too (ONNX's model
        # zoo "light" models: ResNet-50, VGG-19...). bridge's signature has only the real inputs;
        # onnx2torch would make each weight an argument of forward.
        weights = {t.name for t in model.graph.initializer}
        if any(i.name in weights for i in model.graph.input):
            real = [i for i in model.graph.input if i.name not in weights]
            del model.graph.input[:]
            model.graph.input.extend(real)
            # From IR 4 an initializer need not be an input; the opsets it imports need a newer IR anyway.
            model.ir_version = max(model.ir_version, 4, onnx.helper.find_min_ir_version_for(list(model.opset_import), True))
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        notes: list[str] = []
        if _dropouts_as_identity(model):
            notes.append("Dropout (an identity at inference) written as Identity: onnx2torch's takes its ratio as a tensor, "
                         "which torch.export cannot trace")
        if _reshapes_allowing_zero_dropped(model):
            notes.append("allowzero=1 cleared on Reshapes whose target shape has no 0 (the same result): onnx2torch "
                         "does not take it")
        lifted = opset > defaults.ONNX2TORCH_MAX_OPSET or opset < defaults.ONNX2TORCH_MIN_OPSET
        if lifted:
            if opset > defaults.ONNX2TORCH_MAX_OPSET:
                _int64_initializers_as_fields(model)
            model = onnx.version_converter.convert_version(model, defaults.ONNX2TORCH_MAX_OPSET)
            notes.append(f"converted opset {opset} -> {defaults.ONNX2TORCH_MAX_OPSET} with onnx.version_converter for onnx2torch")
        # Past protobuf's limit (the same threshold torch -> onnx writes external data at) onnx2torch gets a file.
        if external_bytes(model) + model.ByteSize() < defaults.external_data_threshold():
            external += inline_external(model, job.src.parent)
            if _computes_constants(model):
                # onnx2torch takes a Conv's or Gemm's weights from the initializers only: weights computed in
                # the graph (ONNX's "light" test models make every one with ConstantOfShape) are folded first.
                import onnxsim

                folded, valid = onnxsim.simplify(model)
                if valid:
                    model = folded
                    notes.append("values computed from constants folded into initializers with onnxsim for onnx2torch")
            module = onnx2torch.convert(model).eval()
        else:
            external += sum(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
            module = _convert_from_file(model, job.src.parent, job.out_dir / ".onnx2torch")
        if external:
            notes.append(f"{external} weights read from external data")
        args = example_tensors(job.signature.inputs)
        if job.candidate.settings.get("save") == "trace":
            target = job.out_dir / "model.pt"
            torch.jit.save(torch.jit.trace(module, args), str(target))
        else:
            target = job.out_dir / "model.pt2"
            torch.export.save(torch.export.export(module, args), str(target))
        specs = tuple(TensorSpec(s.name, tuple(d if isinstance(d, int) else 1 for d in s.shape), s.dtype)
                      for s in job.signature.inputs)
        child = TorchRunner(target, LoadOptions(input_specs=specs)).signature()
        options = {"target_opset": defaults.ONNX2TORCH_MAX_OPSET if lifted else opset, "saved_as": target.suffix}
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options=options, notes=tuple(notes))
