"""Save a live model (or a ``package.module:factory`` reference) to a file every hop can read.

PyTorch modules become an ExportedProgram (``torch.export``; TorchScript trace when export cannot
capture the model, recorded as the source kind); Keras models become ``.keras``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.inputs import InputSpecs


def _is_torch_module(obj: Any) -> bool:
    return "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module)


def materialize(obj: Any, out_dir: Path, specs: InputSpecs | None, dynamic_batch: bool, *,
                torchscript: bool = False) -> dict[str, Any]:
    """Save `obj`; with `torchscript`, a PyTorch module is traced (for the TorchScript exporter)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if _is_torch_module(obj):
        return _save_torch(obj, out_dir, specs, dynamic_batch, torchscript)
    if type(obj).__module__.startswith(("keras", "tf_keras", "tensorflow")):
        path = out_dir / "model.keras"
        obj.save(str(path))
        return {"path": str(path), "format": "keras"}
    raise InputError(f"the factory returned a {type(obj).__name__}, not an nn.Module or a Keras model")


def _save_torch(module: Any, out_dir: Path, specs: InputSpecs | None, dynamic_batch: bool,
                torchscript: bool) -> dict[str, Any]:
    import inspect

    import torch

    from bridge.runtimes.torch_runner import example_tensors
    from bridge.signature import TensorSpec

    if specs is None:
        raise InputError("a PyTorch module needs example inputs: give --input-shape NAME:1,3,224,224 or --example-inputs FILE.npz")
    module = module.eval()
    args = example_tensors(tuple(TensorSpec(n, s, d) for n, s, d in specs.specs))
    dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in args) if dynamic_batch else None
    if specs.named:
        params = [p for p in inspect.signature(module.forward).parameters if p not in ("self",)]
        wrong = [n for n, _, _ in specs.specs if n not in params]
        if wrong:
            raise InputError(f"{specs.origin}: {wrong[0]!r} is not an argument of {type(module).__name__}.forward ({', '.join(params)})")
    used = {"specs": specs.to_json()}
    note = "saved as TorchScript for --torch-exporter torchscript"
    if not torchscript:
        try:
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
            path = out_dir / "model.pt2"
            torch.export.save(program, str(path))
            return {"path": str(path), "format": "torch", **used}
        except Exception as exc:  # noqa: BLE001 - torch.export failed: TorchScript is the recorded fallback
            note = f"torch.export could not capture the module ({type(exc).__name__}); saved TorchScript (torch.jit.trace)"
    path = out_dir / "model.pt"
    torch.jit.save(torch.jit.trace(module, args), str(path))
    return {"path": str(path), "format": "torch", "note": note, **used}


def load_reference(reference: str) -> Any:
    """Call ``package.module:factory`` and return what it builds."""
    module_name, _, attr = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise InputError(f"{reference}: cannot import {module_name} ({exc}); is it on PYTHONPATH?") from exc
    except AttributeError as exc:
        raise InputError(f"{reference}: {module_name} has no {attr!r}") from exc
    return factory()


def materialize_task(request: dict[str, Any]) -> dict[str, Any]:
    """Child entry point: build the referenced model and save it."""
    specs_json = request.get("specs")
    specs = None
    if specs_json:
        specs = InputSpecs(tuple((n, tuple(v[0]), v[1]) for n, v in specs_json.items()), origin="--input-shape")
    model = load_reference(request["reference"])
    if specs is None:
        specs = _zoo_specs(request["reference"])
    return materialize(model, Path(request["out_dir"]), specs, bool(request.get("dynamic_batch")),
                       torchscript=bool(request.get("torchscript")))


def _zoo_specs(reference: str) -> InputSpecs | None:
    """A factory may carry its example input shapes as ``factory.example_inputs = {name: (shape, dtype)}``."""
    module_name, _, attr = reference.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    example = getattr(factory, "example_inputs", None)
    if not example:
        return None
    return InputSpecs(tuple((n, tuple(s), d) for n, (s, d) in example.items()), origin=reference)
