"""torchserve -> torch: the ExportedProgram (or TorchScript) a ``.mar`` serves, taken out of the archive as it is.

So a deployed archive can be verified against other formats: the ``.mar`` runs in TorchServe as the
source, the model file inside it in PyTorch. Only the entry ``MAR-INF/MANIFEST.json`` names is read;
nothing in the archive runs.
"""

from __future__ import annotations

import shutil
import zipfile

from bridge.errors import InputError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import LoadOptions, read_signature
from bridge.runtimes.torchserve_runner import read_archive
from bridge.safety import escapes
from bridge.signature import carry_layout


class TorchServeToTorch(Hop):
    def convert(self, job: HopJob) -> HopResult:
        manifest, _ = read_archive(job.src, trust_code=True)  # reading, not serving: the handler does not run here
        name = str(manifest["model"]["serializedFile"])
        suffix = ".pt2" if name.endswith(".pt2") else ".pt"
        if escapes(name) or not name.endswith((".pt2", ".pt", ".pth")):
            raise InputError(f"{job.src}: the serialized model {name!r} is not a PyTorch file inside the archive; "
                             "make the archive again")
        target = job.out_dir / f"model{suffix}"
        with zipfile.ZipFile(job.src) as archive, archive.open(name) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        child = read_signature(Format.TORCH, target, LoadOptions(input_specs=job.signature.inputs))
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options={"extracted": name})
