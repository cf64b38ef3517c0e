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
    """Call onnx2tf with the direct backend, falling back to tf_converter only if it fails.

    onnx2tf rewrites its input file in place (onnxsim, op names), so it is given a private copy:
    the user's source and the ONNX artifact whose sha256 the manifest records stay as they were.
    It names what it writes after the input's stem, so the copy is always ``model.onnx``.
    """
    private = folder.with_name(f".{folder.name}-input")
    try:
        copy = _private_copy(onnx_path, private)
        return _convert(copy, onnx_path.name, folder, saved_model=saved_model)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _private_copy(onnx_path: Path, directory: Path) -> Path:
    """Copy the model and the external data files it names (checked to stay inside its directory)."""
    import onnx

    from bridge.safety import check_onnx_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    check_onnx_external_data(model, onnx_path)
    directory.mkdir(parents=True)
    copy = directory / "model.onnx"
    shutil.copyfile(onnx_path, copy)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    for location in sorted(locations):
        (directory / location).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path.parent / location, directory / location)
    return copy


def _convert(onnx_path: Path, name: str, folder: Path, *, saved_model: bool) -> Onnx2tfRun:
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
            f"onnx2tf could not convert {name}: {DIRECT} failed ({reason}); "
            f"{TF_CONVERTER} failed ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]})"
        ) from exc
    return Onnx2tfRun(folder, TF_CONVERTER, f"{DIRECT} could not lower the model ({reason}); used {TF_CONVERTER}",
                      _recordable(fallback_kwargs))


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
    return all(not isinstance(a, int) or not isinstance(b, int) or a == b for a, b in zip(moved, child, strict=False))


# onnx2tf leaves an input in its ONNX layout when every consumer is one of these (its lowering rule).
_LAYOUT_FREE_CONSUMERS = {"LSTM", "GRU", "RNN", "Cast", "Identity", "Shape", "Size"}


def inputs_kept_by_rule(onnx_path: Path) -> set[str]:
    """Graph inputs onnx2tf's lowering does not make channels-last: consumed only by RNNs and the like."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return {i.name for i in model.graph.input if consumers.get(i.name) and consumers[i.name] <= _LAYOUT_FREE_CONSUMERS}


def _tflite_name(name: str) -> str:
    """onnx2tf writes ``:`` in tensor names as ``__``."""
    return name.replace(":", "__")


def hop_perms(parent: Signature, child: Signature, channels_last_out: set[str], kept_inputs: set[str],
              stage: str) -> tuple[dict[str, tuple[int, ...]], tuple[str, ...]]:
    """The permutation onnx2tf applied to each child tensor (``child = parent.transpose(p)``), and notes.

    The layout onnx2tf's rules and report say it wrote is checked against the shape it wrote. Where
    the two disagree and the other layout fits, onnx2tf changed its mind in a later pass: the written
    shape wins and a note says so. Where neither fits, the hop fails: bridge never guesses.
    """
    perms: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    parents_in = {_tflite_name(t.name): t for t in parent.inputs}
    parents_out = {_tflite_name(t.name): t for t in parent.outputs}
    for spec in child.inputs:
        moved = 3 <= spec.rank <= 5 and spec.name not in {_tflite_name(k) for k in kept_inputs}
        perms[spec.name] = _settle(parents_in, spec.name, spec.shape, moved, stage, "input", notes)
    for spec in child.outputs:
        perms[spec.name] = _settle(parents_out, spec.name, spec.shape, spec.name in channels_last_out, stage, "output", notes)
    return perms, tuple(notes)


def _settle(parents: dict[str, Any], name: str, shape: tuple[Dim, ...], channels_last: bool, stage: str, kind: str,
            notes: list[str]) -> tuple[int, ...]:
    ancestor = parents.get(name)
    if ancestor is None:
        raise HopError(f"{stage}: {kind} {name!r} of the converted model has no tensor of that name in the ONNX model", stage=stage)
    rank = len(shape)
    recorded = channels_last_perm(rank) if channels_last else identity(rank)
    if _fits(ancestor.shape, shape, recorded):
        return recorded
    other = identity(rank) if channels_last else channels_last_perm(rank)
    if rank >= 3 and _fits(ancestor.shape, shape, other):
        notes.append(f"{kind} {name}: onnx2tf wrote shape {list(shape)} for ONNX {list(ancestor.shape)}, "
                     f"not the {'channels-last' if channels_last else 'unchanged'} layout its rules give; perm {list(other)}")
        return other
    raise HopError(
        f"{stage}: {kind} {name!r}: onnx2tf wrote shape {list(shape)} for ONNX shape {list(ancestor.shape)}, "
        f"which neither keeps nor moves channels last; refusing to guess the layout",
        stage=stage,
    )
