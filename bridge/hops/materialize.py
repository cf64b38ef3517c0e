"""Save a built model (a factory's result or a live object) to a file every hop can read.

PyTorch modules become an ExportedProgram (``torch.export``; a TorchScript trace when export cannot
capture the model, recorded as the source kind); Keras models become ``.keras``; JAX functions and Flax modules a ``.jaxexport``
(bridge.hops.jax_model). Which factory
to call, and when, is the source layer's business (bridge.sources).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.formats import Format
from bridge.inputs import ExampleInputs
from bridge.messages import HfExport, MaterializeResponse
from bridge.sources import live_format


def materialize(obj: Any, out_dir: Path, specs: ExampleInputs | None, dynamic_batch: bool, *,
                torchscript: bool = False, origin: str = "the model", hf: HfExport | None = None) -> MaterializeResponse:
    """Save `obj`; with `torchscript`, a PyTorch module is traced (for the TorchScript exporter)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = live_format(obj)
    from bridge.hops.huggingface import is_pretrained_model, save_pretrained_program

    if is_pretrained_model(obj):
        # Named inputs chosen from its config when none are given; outputs keep their Transformers names.
        return save_pretrained_program(obj, out_dir, specs, dynamic_batch, f"Transformers {type(obj).__name__}", hf=hf)
    if hf is not None:
        raise InputError(f"{origin}: --dynamic-seq and --kv-cache apply to Hugging Face Transformers models; "
                         f"this is a {type(obj).__name__}")
    if fmt == Format.JAX:
        from bridge.hops.jax_model import save_jax

        return save_jax(obj, out_dir, specs, dynamic_batch, origin)
    if fmt == Format.TORCH:
        return _save_torch(obj, out_dir, specs, dynamic_batch, torchscript)
    if fmt == Format.KERAS:
        path = out_dir / "model.keras"
        obj.save(str(path))
        return MaterializeResponse(path, Format.KERAS, "keras", specs)
    raise InputError(f"{origin}: returned a {type(obj).__name__}, not an nn.Module, a Keras model or a JAX model "
                     "((function, inputs), a Flax module)")


def _save_torch(module: Any, out_dir: Path, specs: ExampleInputs | None, dynamic_batch: bool,
                torchscript: bool) -> MaterializeResponse:
    import torch

    from bridge.runtimes.torch_runner import example_tensors

    if specs is None:
        raise InputError("a PyTorch module needs example inputs: give --input-shape NAME:1,3,224,224 or --example-inputs FILE.npz")
    module = module.eval()
    args = example_tensors(specs.specs)
    dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in args) if dynamic_batch else None
    if specs.named:
        params = [p for p in inspect.signature(module.forward).parameters if p not in ("self",)]
        wrong = [s.name for s in specs.specs if s.name not in params]
        if wrong:
            raise InputError(f"{specs.origin}: {wrong[0]!r} is not an argument of {type(module).__name__}.forward ({', '.join(params)})")
    note = "saved as TorchScript for --torch-exporter torchscript"
    if not torchscript:
        try:
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
            path = out_dir / "model.pt2"
            torch.export.save(program, str(path))
            return MaterializeResponse(path, Format.TORCH, "exported_program", specs)
        except Exception as exc:  # noqa: BLE001 - torch.export failed: TorchScript is the recorded fallback
            note = f"torch.export could not capture the module ({type(exc).__name__}); saved TorchScript (torch.jit.trace)"
    path = out_dir / "model.pt"
    torch.jit.save(torch.jit.trace(module, args), str(path))
    return MaterializeResponse(path, Format.TORCH, "torchscript", specs, note)
