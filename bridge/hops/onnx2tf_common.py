"""What the two onnx2tf hops share: the call (one backend per candidate), and reading the layout it recorded.

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

from bridge.errors import HopError, NotApplicableError
from bridge.signature import Dim, Signature, channels_last_perm, identity

REPORT_NAME = "model_tensor_correspondence_report.json"
TENSOR_NAMES = "tensor_names.json"
"""bridge's copy of the report's names, beside the artifact (read by bridge/runtimes/tflite_capture.py)."""
TENSOR_NAMES_SCHEMA = "bridge.tensor_names/1"
DIRECT, TF_CONVERTER = "flatbuffer_direct", "tf_converter"


@dataclass(frozen=True)
class Onnx2tfRun:
    folder: Path
    backend: str
    kwargs: dict[str, Any]


def run_onnx2tf(onnx_path: Path, folder: Path, *, saved_model: bool, backend: str,
                static_shapes: dict[str, list[int]] | None = None, batch_free_reshape: bool = False,
                keras: bool = False) -> Onnx2tfRun:
    """Call onnx2tf with one backend (the hop's candidate chooses it).

    onnx2tf rewrites its input file in place (onnxsim, op names), so it is given a private copy:
    the user's source and the ONNX artifact whose sha256 the manifest records stay as they were.
    It names what it writes after the input's stem, so the copy is always ``model.onnx``.
    `static_shapes` fixes each named input's shape and folds the shape arithmetic of the copy
    (onnxsim) before onnx2tf sees it; `batch_free_reshape` rewrites the copy's Reshape targets that
    carry an input's batch size (`rewrite_batch_reshapes`). `keras` also writes the model onnx2tf
    builds as a Keras (tf_keras) ``.keras`` archive (``model_float32_v3.keras``; its tf_converter backend).
    """
    import onnx2tf

    private = folder.with_name(f".{folder.name}-input")
    try:
        copy = _private_copy(onnx_path, private)
        rewritten = _prepare_copy(copy, static_shapes, batch_free_reshape)
        kwargs: dict[str, Any] = {
            "input_onnx_file_path": str(copy),
            "output_folder_path": str(folder),
            "copy_onnx_input_output_names_to_tflite": True,
            "non_verbose": True,
            "tflite_backend": backend,
        }
        if backend == DIRECT:
            kwargs["flatbuffer_direct_output_saved_model"] = saved_model
        if keras:
            kwargs["output_keras_v3"] = True
        if static_shapes:
            kwargs["overwrite_input_shape"] = [f"{name}:{','.join(str(d) for d in shape)}" for name, shape in static_shapes.items()]
        onnx2tf.convert(**kwargs)
        recorded = _recordable(kwargs)
        if rewritten:
            recorded["rewritten_before_onnx2tf"] = rewritten
        return Onnx2tfRun(folder, backend, recorded)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _prepare_copy(copy: Path, static_shapes: dict[str, list[int]] | None, batch_free_reshape: bool) -> str:
    """Apply the candidate's rewrites to onnx2tf's private copy; what was done, for the manifest ('' for nothing)."""
    if not static_shapes and not batch_free_reshape:
        return ""
    import onnx

    model = onnx.load(str(copy))
    done = []
    if static_shapes:
        import onnxsim

        model, valid = onnxsim.simplify(model, overwrite_input_shapes=static_shapes)
        if not valid:
            raise HopError(f"{copy.name}: onnxsim could not fold the model at the input shapes {static_shapes}")
        done.append("shapes folded with onnxsim at the fixed input shapes")
    if batch_free_reshape:
        count = rewrite_batch_reshapes(model)
        if count == 0:
            raise NotApplicableError("no Reshape in this model takes its target from an input's batch size: nothing to rewrite")
        done.append(f"{count} Reshape target(s) built from an input's batch size written with -1")
    onnx.save(model, str(copy))
    return "; ".join(done)


def rewrite_batch_reshapes(model: Any) -> int:
    """Rewrite ``Reshape(x, Concat(Shape(input)[0:1], constants))`` as ``Reshape(x, [-1, constants])``; how many.

    torch.onnx writes ``x.view(x.size(0), -1)`` this way; onnx2tf's SavedModel path loses the
    Shape slice and fails on every call. With -1 the reshape keeps the batch whatever it is. Only
    targets with exactly one unknown are rewritten; the hop's check verifies the result.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    graph_inputs = {i.name for i in graph.input}
    count = 0
    for node in graph.node:
        concat = producers.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if concat is None or concat.op_type != "Concat":
            continue
        parts = []
        for name in concat.input:
            shape = producers.get(name)
            attrs = {a.name: helper.get_attribute_value(a) for a in shape.attribute} if shape is not None else {}
            if shape is not None and shape.op_type == "Shape" and shape.input[0] in graph_inputs \
                    and attrs.get("start", 0) == 0 and attrs.get("end") == 1:
                parts.append(np.array([-1], dtype=np.int64))
            elif name in constants:
                parts.append(constants[name].astype(np.int64).reshape(-1))
            else:
                break
        else:
            target = np.concatenate(parts)
            if int((target == -1).sum()) != 1:
                continue
            name = f"{node.input[1]}__batch_free"
            graph.initializer.append(numpy_helper.from_array(target, name))
            node.input[1] = name
            count += 1
    return count


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


def _recordable(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in ("input_onnx_file_path", "output_folder_path")}


def write_name_map(report: Path, target: Path) -> bool:
    """Keep onnx2tf's correspondence report as bridge's name map: ONNX tensor -> TFLite tensor, and its layout."""
    if not report.is_file():
        return False
    data = json.loads(report.read_text(encoding="utf-8"))
    names, channels_last = {}, []
    for record in data.get("records", []):
        onnx_name, tflite_name = record.get("onnx_output_name"), record.get("resolved_tflite_tensor_name")
        if isinstance(onnx_name, str) and isinstance(tflite_name, str) and record.get("exists_in_final_model", True):
            names[onnx_name] = tflite_name
            if record.get("assume_channel_last_layout"):
                channels_last.append(tflite_name)
    target.write_text(json.dumps({"schema": TENSOR_NAMES_SCHEMA, "names": names, "channels_last": channels_last},
                                 indent=1), encoding="utf-8")
    return True


def example_shapes(signature: Signature, length: int | None = None) -> dict[str, list[int]]:
    """Every input's shape with a symbolic batch set to 1 and other symbolic dimensions to `length` (else 1),
    for a static-shape conversion."""
    return {s.name: [d if isinstance(d, int) else (1 if i == 0 else length or 1) for i, d in enumerate(s.shape)]
            for s in signature.inputs}


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
    if ancestor is None and name.startswith("arg_") and not name[4:5].isalpha():
        ancestor = parents.get(name[4:])  # a SavedModel signature names an input "0" (not an identifier) arg_0
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
