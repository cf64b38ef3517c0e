"""Write a zoo model in its source format, with one example input set, from a child process.

``export(name, out_dir)`` runs the export as an isolated step (bridge.isolation), so that torch and
TensorFlow never load in the caller's process, nor together in one process. The child writes

* ``NAME.pt2`` (torch.export ExportedProgram; dim 0 dynamic for ``dynamic_batch`` models), or
  ``NAME.pt`` (TorchScript, ``torch.jit.trace``) when torch.export cannot capture the model,
  with the reason in `ExportResult.note`;
* ``NAME.keras`` for Keras models;
* ``NAME.jaxexport`` for JAX models (``jax.export``; convert them from their builder, which jax2onnx needs);
* ``NAME.inputs.npz``: the registry's example inputs, keyed by input name, exact shapes.

Existing files are not overwritten unless ``force`` (``--force``) is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import OutputError
from bridge.isolation import run_isolated
from bridge.messages import ZooExportRequest, ZooExportResponse
from bridge.zoo.registry import ZooModel, get

EXPORT_TIMEOUT = 900.0
"""Seconds one export may take (the torchvision models take well under a minute on a laptop)."""
_STAGE = "zoo export"


@dataclass(frozen=True)
class ExportResult:
    """The files one export wrote."""

    model_path: Path
    inputs_path: Path
    model: ZooModel
    note: str = ""
    """Empty, or why torch.export failed and TorchScript was written instead."""

    @property
    def fell_back(self) -> bool:
        """True when the model was saved as TorchScript because torch.export failed."""
        return self.model_path.suffix == ".pt"


def inputs_path(model: ZooModel, out_dir: Path) -> Path:
    """Where the example inputs of `model` go in `out_dir`."""
    return out_dir / f"{model.name}.inputs.npz"


def candidate_paths(model: ZooModel, out_dir: Path) -> tuple[Path, ...]:
    """Every file an export of `model` to `out_dir` may write (a torch model: .pt2 or .pt)."""
    suffixes = {"torch": (".pt2", ".pt"), "jax": (".jaxexport",)}.get(model.source, (".keras",))
    return (*(out_dir / f"{model.name}{s}" for s in suffixes), inputs_path(model, out_dir))


def _prepare(model: ZooModel, out_dir: Path, force: bool) -> None:
    """Refuse to overwrite (unless `force`, which removes the old files) and create `out_dir`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory; choose another output directory")
    existing = [p for p in candidate_paths(model, out_dir) if p.exists()]
    if existing and not force:
        raise OutputError(
            f"{existing[0]}: already exists; pass force=True (--force) to overwrite it or choose another directory"
        )
    for path in existing:
        # A stale NAME.pt from an earlier fallback must not sit beside a new NAME.pt2.
        path.unlink()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot create the output directory ({exc.strerror}); choose another") from exc


def export(name: str, out_dir: Path, *, force: bool = False, timeout: float = EXPORT_TIMEOUT) -> ExportResult:
    """Export zoo model `name` into `out_dir` from a child process and return what it wrote.

    Raises InputError for an unknown name, OutputError when a file would be overwritten without
    `force`, HopError (with the tail of the child's output) when the child fails or times out.
    """
    model = get(name)
    out_dir = Path(out_dir).resolve()
    _prepare(model, out_dir, force)
    response = run_isolated(ZooExportRequest(name, out_dir), stage=_STAGE, timeout=timeout, hide_gpu=True)
    return ExportResult(response.model_path, response.inputs_path, model, response.note)


# --- the child --------------------------------------------------------------------------------


def _save_torch(model: ZooModel, module: Any, arrays: dict[str, Any], out_dir: Path) -> tuple[Path, str]:
    import torch

    from bridge.hops.huggingface import is_pretrained_model, save_pretrained_program
    from bridge.inputs import ExampleInputs

    if is_pretrained_model(module):  # inputs and outputs under their Transformers names
        saved = save_pretrained_program(module, out_dir, ExampleInputs(model.inputs, origin=model.name), model.dynamic_batch,
                                        file_name=f"{model.name}.pt2")
        return saved.path, ""

    args = tuple(torch.from_numpy(arrays[spec.name]) for spec in model.inputs)
    dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} for _ in args) if model.dynamic_batch else None
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes)
        path = out_dir / f"{model.name}.pt2"
        torch.export.save(program, str(path))
        return path, ""
    except Exception as exc:  # noqa: BLE001 - any torch.export failure means the recorded TorchScript fallback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        note = f"torch.export failed ({type(exc).__name__}: {first}); saved TorchScript (torch.jit.trace) instead"
    path = out_dir / f"{model.name}.pt"
    with torch.no_grad():
        traced = torch.jit.trace(module, args)
    torch.jit.save(traced, str(path))
    return path, note


def export_here(request: ZooExportRequest) -> ZooExportResponse:
    """Build and save the model in this process (the child side of `export`)."""
    from bridge.inputs import write_npz

    model = get(request.name)
    out_dir = request.out_dir
    arrays = model.example_inputs()
    built = model.build()
    if model.source == "torch":
        model_path, note = _save_torch(model, built, arrays, out_dir)
    elif model.source == "jax":
        from bridge.hops.jax_model import save_jax

        saved = save_jax(built, out_dir, None, model.dynamic_batch, model.builder)
        model_path, note = saved.path.rename(out_dir / f"{model.name}.jaxexport"), ""
    else:
        model_path, note = out_dir / f"{model.name}.keras", ""
        built.save(str(model_path))
    npz = inputs_path(model, out_dir)
    write_npz(npz, arrays)
    return ZooExportResponse(model_path, npz, note)
