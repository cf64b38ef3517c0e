"""PyTorch runner: ExportedProgram (.pt2), TorchScript (.pt) and, only when trusted, pickled modules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from bridge import safety
from bridge.errors import DeviceUnavailableError, InputError, UnsafeInputError
from bridge.huggingface import EAGER_PRETRAINED
from bridge.runtimes.base import LoadOptions, Runner
from bridge.signature import Signature, TensorSpec

if TYPE_CHECKING:
    import torch


def torch_dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def output_names(value: Any, count: int) -> list[str]:
    """Names of a model's `count` flattened outputs: the keys of a dict of tensors (a Transformers
    ModelOutput among them), else ``output_0``, ``output_1``..."""
    if isinstance(value, dict) and len(value) == count and all(not isinstance(v, (dict, list, tuple)) for v in value.values()):
        return [str(key) for key in value]
    return [f"output_{i}" for i in range(count)]


def flatten_outputs(value: Any) -> list[Any]:
    """A model's outputs as a flat list: tensors, tuples, lists and dicts (in key order)."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in flatten_outputs(item)]
    if isinstance(value, dict):
        return [leaf for key in value for leaf in flatten_outputs(value[key])]
    return [value]


def load_module(path: Path, *, device: str = "cpu", trust_pickle: bool = False) -> tuple[Any, str, Any]:
    """Load a PyTorch file without running code it carries: (module, kind, exported_program or None)."""
    import torch

    kind = "exported_program" if path.suffix.lower() == ".pt2" else "torchscript"
    safety.check_archive(path)
    if kind == "exported_program":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure here means the file is not a loadable .pt2
            raise InputError(
                f"{path}: not a loadable ExportedProgram ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                "save one with torch.export.save"
            ) from exc
        return program.module(), kind, program
    if safety.is_torchscript_archive(path):
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{path}: not a loadable TorchScript archive ({str(exc).strip()[:200]})") from exc
        return module.eval(), "torchscript", None
    # A plain torch.save pickle. weights_only=True never runs code from the file.
    try:
        obj = torch.load(str(path), map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the restricted unpickler refused: it needs code to load
        if not trust_pickle:
            raise UnsafeInputError(
                f"{path}: a pickled Python object; loading it would run code from the file. "
                "Re-save it with torch.export.save (.pt2) or torch.jit.save, or pass --trust-pickle if you trust its origin"
            ) from exc
        obj = torch.load(str(path), map_location=device, weights_only=False)
        kind = "pickled_module"
    if not isinstance(obj, torch.nn.Module):
        raise InputError(
            f"{path}: holds {type(obj).__name__} (weights only, no architecture); "
            "save the model with torch.export.save (.pt2) or torch.jit.save, or pass package.module:factory"
        )
    return obj.eval(), kind, None


def example_tensors(specs: tuple[TensorSpec, ...], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """Deterministic tensors matching `specs` (symbolic dims become 1)."""
    import torch

    out = []
    for i, spec in enumerate(specs):
        shape = [d if isinstance(d, int) else 1 for d in spec.shape]
        dtype = getattr(torch, spec.dtype)
        gen = torch.Generator().manual_seed(i)
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(dtype))
        else:
            out.append(torch.randint(0, 2, shape, generator=gen).to(dtype))
    return tuple(t.to(device) for t in out)


def program_output_names(program: Any, count: int) -> list[str]:
    """The keys when an ExportedProgram returns a dict of tensors (its recorded output spec), else ``output_i``."""
    spec = getattr(getattr(program, "call_spec", None), "out_spec", None)
    if spec is not None and getattr(spec, "type", None) is dict and len(spec.context) == count \
            and all(child.num_leaves == 1 and not child.children_specs for child in spec.children_specs):
        return [str(key) for key in spec.context]
    return [f"output_{i}" for i in range(count)]


class TorchRunner(Runner):
    runtime = "torch"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__(path, options)
        if options.factory is None:
            # Refuse a damaged or tampered file before paying for the torch import (load_module checks again).
            safety.check_archive(path)
        import torch

        if options.device.startswith("cuda") and not torch.cuda.is_available():
            raise DeviceUnavailableError("cuda: not available (torch.cuda.is_available() is False)")
        self._torch = torch
        self.program: Any
        if options.factory is not None and options.factory.startswith(EAGER_PRETRAINED):
            from bridge.hops.huggingface import load_eager
            from bridge.huggingface import parse_eager_reference

            directory, task, kv_cache = parse_eager_reference(options.factory)
            names = tuple(s.name for s in options.input_specs or ())
            self.module, self.kind, self.program = load_eager(directory, task, names, options.trust_code, kv_cache), "eager", None
        elif options.factory is not None:
            from bridge.hops.huggingface import is_pretrained_model, wrap
            from bridge.sources import load_factory

            built = load_factory(options.factory).eval()
            if is_pretrained_model(built):  # run as it was exported: named inputs, a dict of named outputs
                built = wrap(built, tuple(s.name for s in options.input_specs or ()))
            self.module, self.kind, self.program = built, "eager", None
        else:
            self.module, self.kind, self.program = load_module(
                path, device=options.device, trust_pickle=options.trust_pickle
            )
        if self.kind != "torchscript":
            self.module = self.module.to(options.device)
        self._signature = self._read_signature()

    @property
    def provider(self) -> str:
        if self.options.device.startswith("cuda"):
            return f"cuda ({self._torch.cuda.get_device_name(0)})"
        return "cpu"

    def _read_signature(self) -> Signature:
        if self.program is not None:
            return self._program_signature()
        specs = self.options.input_specs
        if not specs:
            raise InputError(
                f"{self.path}: a {self.kind} file does not store its input shapes; "
                "give --input-shape NAME:1,3,224,224 (repeatable) or --example-inputs FILE.npz"
            )
        inputs = tuple(TensorSpec(s.name, s.shape, s.dtype) for s in specs)
        outputs = self._probe_outputs(inputs)
        return Signature(inputs, outputs)

    def _program_signature(self) -> Signature:
        program = self.program
        user_inputs = list(program.graph_signature.user_inputs)
        vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
        inputs = []
        for name in user_inputs:
            val = vals.get(name)
            if val is None or not hasattr(val, "shape"):
                continue
            shape = tuple(d if isinstance(d, int) else str(d) for d in val.shape)
            inputs.append(TensorSpec(name, shape, torch_dtype_name(val.dtype)))
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        leaves = flatten_outputs(output_node.args[0])
        names = program_output_names(program, len(leaves))
        outputs = []
        for name, node in zip(names, leaves, strict=True):
            val = node.meta.get("val") if hasattr(node, "meta") else None
            if val is None or not hasattr(val, "shape"):
                continue
            shape = tuple(d if isinstance(d, int) else str(d) for d in val.shape)
            outputs.append(TensorSpec(name, shape, torch_dtype_name(val.dtype)))
        return Signature(tuple(inputs), tuple(outputs))

    def _probe_outputs(self, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        with self._torch.no_grad():
            result = self.module(*example_tensors(inputs, self.options.device))
        leaves = flatten_outputs(result)
        return tuple(
            TensorSpec(name, tuple(t.shape), torch_dtype_name(t.dtype))
            for name, t in zip(output_names(result, len(leaves)), leaves, strict=True)
        )

    def signature(self) -> Signature:
        return self._signature

    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        torch = self._torch
        # numpy has no bfloat16: such inputs arrive as float32 holding bfloat16 values, and go in as the model declares them.
        args = [torch.from_numpy(feeds[spec.name]).to(self.options.device, getattr(torch, spec.dtype) if spec.dtype == "bfloat16" else None)
                for spec in self._signature.inputs]
        with torch.no_grad():
            result = self.module(*args)
        leaves = flatten_outputs(result)
        return {name: (t.float() if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
                for name, t in zip(output_names(result, len(leaves)), leaves, strict=True)}

    def synchronize(self) -> None:
        if self.options.device.startswith("cuda"):
            self._torch.cuda.synchronize()
