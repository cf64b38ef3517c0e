"""tf -> tfjs with the ``tensorflowjs`` converter: a SavedModel's serving_default as a TF.js graph model.

tensorflowjs 4.22 declares dependencies that cannot be installed beside the pinned TensorFlow
(tensorflow-decision-forests pins an older one), so it is installed without them (docs/tfjs.md).
It imports ``tensorflow_decision_forests`` unconditionally and uses it only for decision-forest
models: `decision_forests_shim` puts an empty module in its place, in this hop's child process
only, and a SavedModel that needs the real one fails its conversion with TensorFlow's own error.
The graph is then rewritten where TF.js's WebAssembly backend would compute it wrong or refuse it
(`bridge.hops.tfjs_portable`).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge.errors import NotApplicableError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.hops.tfjs_portable import make_portable
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout

SHIM = "tensorflow_decision_forests"


@contextmanager
def decision_forests_shim() -> Iterator[None]:
    """An empty ``tensorflow_decision_forests`` while tensorflowjs is imported, unless the real one is installed."""
    import importlib.util

    if importlib.util.find_spec(SHIM) is not None or SHIM in sys.modules:
        yield
        return
    sys.modules[SHIM] = types.ModuleType(SHIM, "bridge's stand-in: tensorflowjs imports it; graph models never use it")
    try:
        yield
    finally:
        del sys.modules[SHIM]


class TfToTfjs(Hop):
    def convert(self, job: HopJob) -> HopResult:
        with decision_forests_shim():
            from tensorflowjs.converters import tf_saved_model_conversion_v2 as tfjs

        target = job.out_dir / "graph_model"
        options: dict[str, Any] = {"signature_def": "serving_default", "saved_model_tags": "serve", "control_flow_v2": False,
                   "strip_debug_ops": True, "weight_shard_size_bytes": 4 * 1024 * 1024}
        try:
            tfjs.convert_tf_saved_model(str(job.src), str(target), **options)
        except ValueError as exc:
            if "XlaCallModule" in str(exc):
                raise NotApplicableError(f"{job.src}: the SavedModel runs StableHLO in an XlaCallModule op (jax2tf "
                                         "writes them), which TF.js cannot run") from exc
            raise
        changed = make_portable(target, options["weight_shard_size_bytes"])
        options["untransposed_fused_matmuls"] = len(changed["untransposed"])
        options["expanded_scalar_biases"] = len(changed["bias_expanded"])
        notes = []
        if changed["untransposed"]:
            notes.append(f"{len(changed['untransposed'])} fully connected weights stored untransposed (TF.js's "
                         "WebAssembly backend computes a transposed one wrong; docs/tfjs.md)")
        if changed["bias_expanded"]:
            notes.append(f"{len(changed['bias_expanded'])} fused convolutions' scalar biases stored per channel "
                         "(TF.js's WebAssembly backend refuses a scalar one)")
        child = read_signature(Format.TFJS, target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options=options, notes=tuple(notes))
