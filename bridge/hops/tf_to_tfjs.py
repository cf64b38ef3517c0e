"""tf -> tfjs with the ``tensorflowjs`` converter: a SavedModel's serving_default as a TF.js graph model.

tensorflowjs 4.22 declares dependencies that cannot be installed beside the pinned TensorFlow
(tensorflow-decision-forests pins an older one), so it is installed without them (docs/tfjs.md).
It imports ``tensorflow_decision_forests`` unconditionally and uses it only for decision-forest
models: `decision_forests_shim` puts an empty module in its place, in this hop's child process
only, and a SavedModel that needs the real one fails its conversion with TensorFlow's own error.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.errors import NotApplicableError
from bridge.formats import Format
from bridge.hops.base import Hop, HopJob, HopResult, Produced
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout

SHIM = "tensorflow_decision_forests"
_BYTES = {"float32": 4, "int32": 4, "bool": 1, "float16": 2, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2}


def untranspose_fused_matmuls(folder: Path) -> list[str]:
    """Store each fully connected weight the way TF.js's WebAssembly backend computes correctly; the nodes changed.

    tfjs-backend-wasm 4.22 runs a ``_FusedMatMul`` with ``transpose_b`` on its fallback kernel, which
    adds the bias once per 48-wide block of the shared dimension (and applies the activation to each
    block's partial sum): wrong results on every fully connected layer wider than 48 (docs/tfjs.md).
    A stored rank-2 float32 weight used by that node alone is transposed in its shard and the node's
    ``transpose_b`` cleared: the same product on every backend, and the WebAssembly one takes its
    XNNPACK path. Weights of other kinds, shared weights and batched products are left as they are.
    """
    import json

    import numpy as np

    model_json = folder / "model.json"
    document = json.loads(model_json.read_text(encoding="utf-8"))
    nodes = document["modelTopology"].get("node", [])
    users: dict[str, int] = {}
    for node in nodes:
        for name in node.get("input", []):
            key = name.split(":")[0].lstrip("^")
            users[key] = users.get(key, 0) + 1
    changed: list[str] = []
    for group in document.get("weightsManifest", []):
        offsets, offset = {}, 0
        for weight in group["weights"]:
            offsets[weight["name"]] = (offset, weight)
            dtype = weight.get("quantization", {}).get("dtype", weight["dtype"])
            offset += int(np.prod(weight["shape"], dtype=np.int64)) * _BYTES.get(dtype, 4)
        shards = [folder / name for name in group["paths"]]
        data = bytearray(b"".join(path.read_bytes() for path in shards))
        touched = False
        for node in nodes:
            attr = node.get("attr", {})
            if node.get("op") != "_FusedMatMul" or not attr.get("transpose_b", {}).get("b") or \
                    attr.get("transpose_a", {}).get("b") or len(node.get("input", [])) < 2:
                continue
            name = node["input"][1].split(":")[0]
            found = offsets.get(name)
            if found is None or users.get(name) != 1:
                continue
            start, weight = found
            if len(weight["shape"]) != 2 or weight["dtype"] != "float32" or "quantization" in weight:
                continue
            n, k = weight["shape"]
            matrix = np.frombuffer(bytes(data[start:start + n * k * 4]), dtype="<f4").reshape(n, k)
            data[start:start + n * k * 4] = np.ascontiguousarray(matrix.T).tobytes()
            weight["shape"] = [k, n]
            attr["transpose_b"] = {"b": False}
            changed.append(str(node["name"]))
            touched = True
        if touched:
            position = 0
            for path in shards:
                size = path.stat().st_size
                path.write_bytes(bytes(data[position:position + size]))
                position += size
    if changed:
        model_json.write_text(json.dumps(document), encoding="utf-8")
    return changed


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
        options = {"signature_def": "serving_default", "saved_model_tags": "serve", "control_flow_v2": False,
                   "strip_debug_ops": True, "weight_shard_size_bytes": 4 * 1024 * 1024}
        try:
            tfjs.convert_tf_saved_model(str(job.src), str(target), **options)
        except ValueError as exc:
            if "XlaCallModule" in str(exc):
                raise NotApplicableError(f"{job.src}: the SavedModel runs StableHLO in an XlaCallModule op (jax2tf "
                                         "writes them), which TF.js cannot run") from exc
            raise
        untransposed = untranspose_fused_matmuls(target)
        options["untransposed_fused_matmuls"] = len(untransposed)
        notes = (f"{len(untransposed)} fully connected weights stored untransposed (TF.js's WebAssembly backend "
                 "computes a transposed one wrong; docs/tfjs.md)",) if untransposed else ()
        child = read_signature(Format.TFJS, target)
        return HopResult((Produced(target, carry_layout(job.signature, child)),), options=options, notes=notes)
