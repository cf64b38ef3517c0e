"""TFLite capture for localisation: one LiteRT run that preserves every tensor, default delegates off.

XNNPACK (LiteRT's default delegate) runs whole subgraphs and leaves their intermediates
unwritten, so the capture runs the builtin kernels only, and the same sample through the normal,
delegated interpreter: when their outputs differ, a note says so. Integer tensors are
dequantised with their recorded scale and zero point. The names onnx2tf recorded for renamed
ONNX tensors (its correspondence report, kept by the hop as ``tensor_names.json``) become the
graph's aliases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import InputError
from bridge.hops.onnx2tf_common import TENSOR_NAMES_SCHEMA as NAME_MAP_SCHEMA
from bridge.localization.graph import CapturedGraph, GraphNode, TensorStore

if TYPE_CHECKING:
    from bridge.messages import CaptureRequest

_NAME_MAP_LIMIT = 64 * 1024 * 1024


def read_name_map(file: Path | None) -> tuple[dict[str, str], set[str]]:
    """A name map the manifest lists, checked (a folder may come from anyone); empty when there is none."""
    if file is None or not file.is_file():
        return {}, set()
    where = f"{file}: not a bridge tensor name map; delete it or convert again"
    if file.stat().st_size > _NAME_MAP_LIMIT:
        raise InputError(where)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(where) from exc
    names, layout = (data.get("names"), data.get("channels_last")) if isinstance(data, dict) else (None, None)
    if data.get("schema") != NAME_MAP_SCHEMA or not isinstance(names, dict) or not isinstance(layout, list) \
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()) \
            or not all(isinstance(v, str) for v in layout):
        raise InputError(where)
    return names, set(layout)


def _dequantised(value: Any, detail: dict[str, Any]) -> Any:
    params = detail.get("quantization_parameters") or {}
    scales, zeros = params.get("scales"), params.get("zero_points")
    if value.dtype.kind not in "iu" or scales is None or len(scales) == 0 or not np.any(scales):
        return value
    axis = int(params.get("quantized_dimension", 0))
    shape = [1] * value.ndim
    if len(scales) > 1 and value.ndim:
        shape[axis] = len(scales)
    return ((value.astype(np.float32) - np.asarray(zeros, np.float32).reshape(shape))
            * np.asarray(scales, np.float32).reshape(shape))


def _difference(a: Any, b: Any) -> float | None:
    """How far two outputs differ, when that is more than rounding; None when they agree."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind != "f":
        return None
    diff = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
    return diff if diff > 1e-5 * max(1.0, float(np.max(np.abs(b), initial=0.0))) else None


def _variables(interpreter: Any) -> str:
    """The variable tensors of a TFLite model (state its ops write and read back on the next call)."""
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only listing of the graph's operators
    stateful = sorted({str(op["op_name"]) for op in ops if "LSTM" in str(op["op_name"]) or "RNN" in str(op["op_name"])
                       or op["op_name"] in ("ASSIGN_VARIABLE", "VAR_HANDLE")})
    return "ops that keep state: " + ", ".join(stateful) if stateful else "variable tensors"


def capture(request: CaptureRequest, feeds: dict[str, Any], store: TensorStore,
            history: list[dict[str, Any]]) -> CapturedGraph:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from bridge.runtimes.base import LoadOptions
    from bridge.runtimes.tflite_runner import TfliteRunner

    reference = TfliteRunner(request.path, LoadOptions())  # checks the file; the delegated run to compare with
    for earlier in history:
        reference.run(earlier)
    delegated = reference.run(feeds)
    interpreter = Interpreter(model_path=str(request.path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    key = reference._key
    runner = interpreter.get_signature_runner(key)
    for earlier in history:
        runner(**earlier)
    result = runner(**feeds)
    fresh = TfliteRunner(request.path, LoadOptions()).run(feeds) if history else delegated
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    seen: dict[str, int] = {}
    names: dict[int, str] = {}
    for index, detail in details.items():
        name = str(detail["name"]) or f"tensor{index}"
        names[index] = name if name not in seen else f"{name}#{index}"
        seen.setdefault(name, index)
    input_details, output_details = runner.get_input_details(), runner.get_output_details()
    order = interpreter.get_signature_list()[key]
    inputs = [input_details[name]["index"] for name in order["inputs"]]
    outputs = [output_details[name]["index"] for name in order["outputs"]]
    live = set(inputs)
    nodes = []
    for index in inputs:
        store.put(names[index], interpreter.get_tensor(index))
    for op in interpreter._get_ops_details():  # noqa: SLF001 - LiteRT's only listing of the graph's operators
        reads = [i for i in op["inputs"] if i in live]
        if not reads:
            continue
        writes = [int(i) for i in op["outputs"] if i >= 0]
        live.update(writes)
        for index in writes:
            try:
                value = interpreter.get_tensor(index)
            except ValueError:
                continue  # a tensor the interpreter did not allocate (an unused optional output)
            store.put(names[index], _dequantised(value, details[index]))
        nodes.append(GraphNode(f"{op['op_name']}#{op['index']}", str(op["op_name"]), tuple(names[i] for i in reads),
                               tuple(names[i] for i in writes)))
    notes = []
    for name in order["outputs"]:
        diff = _difference(result[name], delegated[name])
        if diff is not None:
            notes.append(f"output {name}: the delegated run (XNNPACK) differs from the builtin kernels by {diff:.3g}; "
                         "the localisation follows the builtin kernels")
        diff = _difference(fresh[name], delegated[name])
        if diff is not None:
            notes.append(f"output {name}: the model keeps state between calls: after the {len(history)} sample(s) run "
                         f"before it, this sample's output differs by {diff:.3g} from a fresh interpreter's "
                         f"({_variables(interpreter)}); a served model would carry state from one request to the next")
    aliases, channels_last = read_name_map(request.name_map)
    return CapturedGraph(tuple(nodes), tuple(names[i] for i in inputs), tuple(names[i] for i in outputs),
                         dict(store.keys), {name: "channels_last" for name in channels_last}, aliases, tuple(notes))
