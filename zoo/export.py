"""Write a zoo model in its source format, with one example input set, from a child process.

``export(name, out_dir)`` runs ``python -m zoo.export NAME OUT_DIR`` so that torch and TensorFlow
never load in the caller's process, nor together in one process. The child writes

* ``NAME.pt2`` (torch.export ExportedProgram; dim 0 dynamic for ``dynamic_batch`` models), or
  ``NAME.pt`` (TorchScript, ``torch.jit.trace``) when torch.export cannot capture the model,
  with the reason in `ExportResult.note`;
* ``NAME.keras`` for Keras models;
* ``NAME.inputs.npz``: the registry's example inputs, keyed by input name, exact shapes.

Existing files are not overwritten unless ``force`` (``--force``) is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError, HopError, OutputError
from zoo.registry import ZooModel, get

EXPORT_TIMEOUT = 900.0
"""Seconds one export may take (the torchvision models take well under a minute on a laptop)."""
STDERR_TAIL_LINES = 25
_RESULT_MARKER = "zoo-export-result: "
_PROJECT_ROOT = Path(__file__).resolve().parent.parent
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
    suffixes = (".pt2", ".pt") if model.source == "torch" else (".keras",)
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


def _tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def export(name: str, out_dir: Path, *, force: bool = False, timeout: float = EXPORT_TIMEOUT) -> ExportResult:
    """Export zoo model `name` into `out_dir` from a child process and return what it wrote.

    Raises InputError for an unknown name, OutputError when a file would be overwritten without
    `force`, HopError (with the tail of the child's stderr) when the child fails or times out.
    """
    model = get(name)
    out_dir = Path(out_dir).resolve()
    _prepare(model, out_dir, force)
    cmd = [sys.executable, "-m", "zoo.export", name, str(out_dir), "--force"]
    env = {
        **os.environ,
        # The child must import this same tree whatever the caller's working directory is.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        # zoo/__init__ imports this module before runpy runs it as __main__; that warning is noise.
        "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore::RuntimeWarning:runpy"])),
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise HopError(f"{_STAGE} {name}: gave up after {timeout:g} s; pass a larger timeout",
                       stage=_STAGE, detail=_tail(stderr)) from None
    if proc.returncode != 0:
        detail = _tail(proc.stderr)
        raise HopError(f"{_STAGE} {name}: the child process exited with {proc.returncode}:\n{detail}",
                       stage=_STAGE, detail=detail)
    result = next((line[len(_RESULT_MARKER):] for line in reversed(proc.stdout.splitlines())
                   if line.startswith(_RESULT_MARKER)), None)
    if result is None:
        detail = _tail(proc.stdout + "\n" + proc.stderr)
        raise HopError(f"{_STAGE} {name}: the child process reported no result:\n{detail}", stage=_STAGE, detail=detail)
    fields = json.loads(result)
    return ExportResult(Path(fields["model_path"]), Path(fields["inputs_path"]), model, fields["note"])


# --- the child --------------------------------------------------------------------------------


def _save_torch(model: ZooModel, module: Any, arrays: dict[str, Any], out_dir: Path) -> tuple[Path, str]:
    import torch

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
        print(note, file=sys.stderr)
    path = out_dir / f"{model.name}.pt"
    with torch.no_grad():
        traced = torch.jit.trace(module, args)
    torch.jit.save(traced, str(path))
    return path, note


def _export_here(model: ZooModel, out_dir: Path) -> ExportResult:
    """Build and save `model` in this process (the child side of `export`)."""
    import numpy as np

    arrays = model.example_inputs()
    built = model.build()
    if model.source == "torch":
        model_path, note = _save_torch(model, built, arrays, out_dir)
    else:
        model_path, note = out_dir / f"{model.name}.keras", ""
        built.save(str(model_path))
    npz = inputs_path(model, out_dir)
    np.savez(npz, **arrays)
    return ExportResult(model_path, npz, model, note)


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.export NAME OUT_DIR [--force]``: prints the result as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m zoo.export", description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    try:
        model = get(args.name)
        _prepare(model, args.out_dir, args.force)
        result = _export_here(model, args.out_dir)
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    fields = {"model_path": str(result.model_path), "inputs_path": str(result.inputs_path), "note": result.note}
    print(_RESULT_MARKER + json.dumps(fields), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
