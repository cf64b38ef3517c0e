"""torch -> torchserve: a ``.mar`` made with torch-model-archiver, with a handler bridge generates.

The archive holds the ExportedProgram (or TorchScript) as it is, ``handler.py`` (the template
`bridge.hops.torchserve_handler` with the artifact's signature written in: JSON tensors in, named
tensors out, torch and numpy only) and ``bridge-signature.json``. It serves with no user code.
`handler_source` is also what the runner compares an archive's handler with, so a ``.mar`` whose
handler bridge did not write runs only with ``--trust-code``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge.errors import HopError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.signature import Signature, carry_layout

MODEL_NAME = "model"
HANDLER = "handler.py"
SIGNATURE_FILE = "bridge-signature.json"
_TEMPLATE = Path(__file__).with_name("torchserve_handler.py")
_PLACEHOLDER = "SIGNATURE: dict[str, Any] = {}  # bridge writes the model's signature here when it generates the handler"


def handler_signature(signature: Signature, serialized_file: str) -> dict[str, Any]:
    """What the handler and bridge-signature.json hold: the file to load, inputs and outputs in the artifact's names."""
    def specs(items: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "shape": [d if isinstance(d, int) else None for d in s.shape], "dtype": s.dtype}
                for s in items]

    return {"serialized_file": serialized_file, "inputs": specs(signature.inputs), "outputs": specs(signature.outputs)}


def handler_source(described: dict[str, Any]) -> str:
    template = _TEMPLATE.read_text(encoding="utf-8")
    if _PLACEHOLDER not in template:
        raise RuntimeError(f"{_TEMPLATE}: the SIGNATURE placeholder line is missing")
    return template.replace(_PLACEHOLDER, f"SIGNATURE = {described!r}", 1)


class TorchToTorchServe(Hop):
    def convert(self, job: HopJob) -> HopResult:
        staging = job.out_dir / ".archive"
        staging.mkdir(parents=True, exist_ok=True)
        described = handler_signature(job.signature, job.src.name)
        (staging / HANDLER).write_text(handler_source(described), encoding="utf-8")
        (staging / SIGNATURE_FILE).write_text(json.dumps(described, indent=1), encoding="utf-8")
        command = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", MODEL_NAME, "--version", "1.0",
                   "--serialized-file", str(job.src), "--handler", str(staging / HANDLER),
                   "--extra-files", str(staging / SIGNATURE_FILE), "--export-path", str(job.out_dir), "--force"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HopError(f"torch-model-archiver failed (exit {done.returncode}): "
                           f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']}")
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()
        target = job.out_dir / f"{MODEL_NAME}.mar"
        child = read_signature(Format.TORCHSERVE, target)
        options = {"model_name": MODEL_NAME, "version": "1.0", "handler": "generated (bridge/hops/torchserve_handler.py)",
                   "serialized_file": job.src.name}
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options=options)
