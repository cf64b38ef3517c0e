"""Rewrites of a TF.js graph model so that every TF.js backend runs it as the CPU backend does.

The tensorflowjs converter writes graphs that TF.js's CPU backend runs right and its WebAssembly
backend (tfjs-backend-wasm 4.22) does not (docs/tfjs.md):

- a ``_FusedMatMul`` with ``transpose_b`` takes the WebAssembly fallback kernel, which adds the bias
  once per 48-wide block of the shared dimension: a stored rank-2 float32 weight is transposed in
  its shard instead and ``transpose_b`` cleared (`untranspose_fused_matmuls`);
- a convolution fused with a scalar add (``Conv2D`` + ``AddV2(3.0)``, as hard-swish is written) has
  a rank-0 bias, which the WebAssembly backend refuses ("FusedConv2D only supports rank-1 bias"):
  the scalar is stored as one value per output channel (`expand_scalar_biases`).

Both compute the same numbers on every backend. `make_portable` applies them and rewrites the
weight shards, split at the converter's shard size, with the converter's names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_BYTES = {"float32": 4, "int32": 4, "bool": 1, "float16": 2, "uint8": 1, "int8": 1, "uint16": 2, "int16": 2}
_CONVOLUTIONS = {"_FusedConv2D": 3, "FusedDepthwiseConv2dNative": None}
"""Fused convolutions, and the filter axis that counts output channels (None: depthwise, in x multiplier)."""


@dataclass
class Weight:
    spec: dict[str, Any]
    data: bytes

    @property
    def plain_float32(self) -> bool:
        return self.spec.get("dtype") == "float32" and "quantization" not in self.spec

    def array(self) -> np.ndarray[Any, Any]:
        return np.frombuffer(self.data, dtype="<f4").reshape(self.spec["shape"])

    def store(self, array: np.ndarray[Any, Any]) -> None:
        self.spec["shape"] = [int(d) for d in array.shape]
        self.data = np.ascontiguousarray(array, dtype="<f4").tobytes()


def _size(spec: dict[str, Any]) -> int:
    dtype = spec.get("quantization", {}).get("dtype", spec.get("dtype", "float32"))
    return int(np.prod(spec.get("shape", []), dtype=np.int64)) * _BYTES.get(dtype, 4)


def read_weights(folder: Path, document: dict[str, Any]) -> list[list[Weight]]:
    """Each weight group's weights with their bytes, in manifest order."""
    groups = []
    for group in document.get("weightsManifest", []):
        data = b"".join((folder / name).read_bytes() for name in group["paths"])
        weights, offset = [], 0
        for spec in group["weights"]:
            size = _size(spec)
            weights.append(Weight(spec, data[offset:offset + size]))
            offset += size
        groups.append(weights)
    return groups


def write_weights(folder: Path, document: dict[str, Any], groups: list[list[Weight]], shard_bytes: int) -> None:
    """Replace the shards: each group's weights concatenated and split at `shard_bytes`, named as the converter names them."""
    for number, (group, weights) in enumerate(zip(document["weightsManifest"], groups, strict=True), start=1):
        for name in group["paths"]:
            (folder / name).unlink(missing_ok=True)
        data = b"".join(w.data for w in weights)
        pieces = [data[i:i + shard_bytes] for i in range(0, len(data), shard_bytes)] or [b""]
        group["paths"] = [f"group{number}-shard{i}of{len(pieces)}.bin" for i in range(1, len(pieces) + 1)]
        group["weights"] = [w.spec for w in weights]
        for name, piece in zip(group["paths"], pieces, strict=True):
            (folder / name).write_bytes(piece)


def _users(nodes: list[dict[str, Any]]) -> dict[str, int]:
    users: dict[str, int] = {}
    for node in nodes:
        for name in node.get("input", []):
            key = name.split(":")[0].lstrip("^")
            users[key] = users.get(key, 0) + 1
    return users


def untranspose_fused_matmuls(nodes: list[dict[str, Any]], weights: dict[str, Weight]) -> list[str]:
    """Fully connected layers whose weight is now stored untransposed (used by that node alone, float32, rank 2)."""
    users = _users(nodes)
    changed = []
    for node in nodes:
        attr = node.get("attr", {})
        if node.get("op") != "_FusedMatMul" or not attr.get("transpose_b", {}).get("b") or \
                attr.get("transpose_a", {}).get("b") or len(node.get("input", [])) < 2:
            continue
        name = node["input"][1].split(":")[0]
        weight = weights.get(name)
        if weight is None or users.get(name) != 1 or not weight.plain_float32 or len(weight.spec["shape"]) != 2:
            continue
        weight.store(weight.array().T)
        attr["transpose_b"] = {"b": False}
        changed.append(str(node["name"]))
    return changed


def expand_scalar_biases(nodes: list[dict[str, Any]], weights: dict[str, Weight], group: list[Weight]) -> list[str]:
    """Fused convolutions whose scalar bias is now one value per output channel (a weight of its own each)."""
    changed = []
    for node in nodes:
        op, inputs = node.get("op"), node.get("input", [])
        if op not in _CONVOLUTIONS or len(inputs) < 3:
            continue
        filter_weight, bias = weights.get(inputs[1].split(":")[0]), weights.get(inputs[2].split(":")[0])
        if filter_weight is None or bias is None or bias.spec.get("shape") != [] or not bias.plain_float32:
            continue
        shape = filter_weight.spec["shape"]
        if len(shape) != 4:
            continue
        axis = _CONVOLUTIONS[op]
        channels = int(shape[axis]) if axis is not None else int(shape[2]) * int(shape[3])
        name = f"{node['name']}/bridge_bias"
        expanded = Weight({"name": name, "shape": [channels], "dtype": "float32"}, b"")
        expanded.store(np.full(channels, bias.array(), dtype="<f4"))
        weights[name] = expanded
        group.append(expanded)
        inputs[2] = name
        nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"},
                                                            "value": {"tensor": {"dtype": "DT_FLOAT",
                                                                                 "tensorShape": {"dim": [{"size": str(channels)}]}}}}})
        changed.append(str(node["name"]))
    return changed


def make_portable(folder: Path, shard_bytes: int) -> dict[str, list[str]]:
    """Apply both rewrites to the graph model in `folder`; the nodes each changed (nothing is written if none)."""
    model_json = folder / "model.json"
    document = json.loads(model_json.read_text(encoding="utf-8"))
    nodes = document["modelTopology"].setdefault("node", [])
    groups = read_weights(folder, document)
    if not groups:
        return {"untransposed": [], "bias_expanded": []}
    weights = {w.spec["name"]: w for group in groups for w in group}
    changed = {"untransposed": untranspose_fused_matmuls(nodes, weights),
               "bias_expanded": expand_scalar_biases(nodes, weights, groups[-1])}
    if any(changed.values()):
        for node in nodes:  # the Const nodes' recorded shapes follow their weights
            weight = weights.get(str(node.get("name")))
            tensor = node.get("attr", {}).get("value", {}).get("tensor")
            if node.get("op") == "Const" and weight is not None and isinstance(tensor, dict):
                tensor["tensorShape"] = {"dim": [{"size": str(d)} for d in weight.spec["shape"]]}
        write_weights(folder, document, groups, shard_bytes)
        model_json.write_text(json.dumps(document), encoding="utf-8")
    return changed
