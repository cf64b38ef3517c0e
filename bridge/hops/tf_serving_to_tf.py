"""tf-serving -> tf: the version TF Serving would serve (the highest numbered), as a plain SavedModel.

So a TF Serving model directory can be verified against other formats. The warm-up records
(``assets.extra``) stay behind: they belong to the server.
"""

from __future__ import annotations

import shutil

from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.runtimes.serving_layout import WARMUP, version_dir
from bridge.signature import carry_layout


class TfServingToTf(Hop):
    def convert(self, job: HopJob) -> HopResult:
        version = version_dir(job.src)
        target = job.out_dir / "saved_model"
        shutil.copytree(version, target, ignore=shutil.ignore_patterns(str(WARMUP.parent)))
        child = read_signature(Format.TF, target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options={"version": int(version.name)})
