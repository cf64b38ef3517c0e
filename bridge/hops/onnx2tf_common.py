"""What the two onnx2tf hops share: the call, the fallback, and reading the layout it recorded.

onnx2tf makes rank 3-5 *inputs* channels-last (its documented rule, unless an input is named in
``keep_ncw_or_nchw_or_ncdhw_input_names``). For *outputs* it records, in
``model_tensor_correspondence_report.json``, which graph outputs it renamed from a tensor it
built channels-last (``*_nhwc``). bridge reads both and checks each against the written shapes;
a disagreement is an error, never a guess.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import HopError
from bridge.signature import Dim, Signature, channels_last_perm, identity

REPORT_NAME = "model_tensor_correspondence_report.json"
DIRECT, TF_CONVERTER = "flatbuffer_direct", "tf_converter"


@dataclass(frozen=True)
class Onnx2tfRun:
    folder: Path
    backend: str
    fallback: str | None
    kwargs: dict[str, Any]


def run_onnx2tf(onnx_path: Path, folder: Path, *, saved_model: bool) -> Onnx2tfRun:
    """Call onnx2tf with the direct backend, falling back to tf_converter only if it fails."""
    import onnx2tf

    base: dict[str, Any] = {
        "input_onnx_file_path": str(onnx_path),
        "output_folder_path": str(folder),
        "copy_onnx_input_output_names_to_tflite": True,
        "non_verbose": True,
    }
    direct = {**base, "tflite_backend": DIRECT, "flatbuffer_direct_output_saved_model": saved_model}
    try:
        onnx2tf.convert(**direct)
        return Onnx2tfRun(folder, DIRECT, None, _recordable(direct))
    except Exception as exc:  # noqa: BLE001 - the direct backend cannot lower every model: fall back, recorded
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
    shutil.rmtree(folder, ignore_errors=True)
    fallback_kwargs = {**base, "tflite_backend": TF_CONVERTER}
    try:
        onnx2tf.convert(**fallback_kwargs)
    except Exception as exc:  # noqa: BLE001 - both backends failed: the hop fails with both reasons
        raise HopError(
            f"onnx2tf could not convert {onnx_path.name}: {DIRECT} failed ({reason}); "
            f"{TF_CONVERTER} failed ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})"
        ) from exc
    return Onnx2tfRun(folder, TF_CONVERTER, f"{DIRECT} could not lower the model ({reason}); used {TF_CONVERTER}", _recordable(fallback_kwargs))


def _recordable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in ("input_onnx_file_path", "output_folder_path")}


def channels_last_outputs(folder: Path) -> set[str]:
    """Graph outputs onnx2tf recorded as built channels-last (renamed from an ``*_nhwc`` tensor)."""
    report = folder / REPORT_NAME
    if not report.is_file():
        return set()
    data = json.loads(report.read_text(encoding="utf-8"))
    outputs = {r["resolved_tflite_tensor_name"] for r in data.get("records", []) if r.get("is_graph_output")}
    renamed = {}
    for event in data.get("lineage_events", []):
        if event.get("kind") == "rename_tensor":
            renamed[event["new_name"]] = event["old_name"]
    return {name for name in outputs if str(renamed.get(name, "")).endswith("_nhwc")}


def _fits(parent: tuple[Dim, ...], child: tuple[Dim, ...], perm: tuple[int, ...]) -> bool:
    if len(parent) != len(child):
        return False
    moved = tuple(parent[p] for p in perm)
    return all(not isinstance(a, int) or not isinstance(b, int) or a == b for a, b in zip(moved, child))


def hop_perms(parent: Signature, child: Signature, channels_last_out: set[str], stage: str) -> dict[str, tuple[int, ...]]:
    """The permutation onnx2tf applied to each child tensor (``child = parent.transpose(p)``)."""
    perms: dict[str, tuple[int, ...]] = {}
    parents_in = {t.name: t for t in parent.inputs}
    parents_out = {t.name: t for t in parent.outputs}
    for spec in child.inputs:
        perm = channels_last_perm(spec.rank) if 3 <= spec.rank <= 5 else identity(spec.rank)
        perms[spec.name] = _checked(parents_in, spec.name, spec.shape, perm, stage, "input")
    for spec in child.outputs:
        perm = channels_last_perm(spec.rank) if spec.name in channels_last_out else identity(spec.rank)
        perms[spec.name] = _checked(parents_out, spec.name, spec.shape, perm, stage, "output")
    return perms


def _checked(parents: dict[str, Any], name: str, shape: tuple[Dim, ...], perm: tuple[int, ...], stage: str, kind: str) -> tuple[int, ...]:
    ancestor = parents.get(name)
    if ancestor is None:
        raise HopError(f"{stage}: {kind} {name!r} of the converted model has no tensor of that name in the ONNX model", stage=stage)
    if not _fits(ancestor.shape, shape, perm):
        raise HopError(
            f"{stage}: {kind} {name!r}: onnx2tf's recorded layout {list(perm)} does not turn the ONNX shape "
            f"{list(ancestor.shape)} into the written shape {list(shape)}; refusing to guess the layout",
            stage=stage,
        )
    return perm
