"""ONNX capture for localisation: one onnxruntime run with every node output kept, and cutting a graph.

Every output of every node that depends on the graph's inputs becomes a graph output; the
session runs with graph optimisations off, so each ONNX node's output is the value the node
computes (an optimised session fuses Conv+BatchNorm and the like and the intermediate names
vanish). The tensors are fetched a chunk at a time and written to the store as they come, so
the capture never holds more than one chunk. Its final outputs are checked against a normal,
optimised run of the unmodified model: a difference is a note in the localisation.
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import InputError
from bridge.localization.graph import CapturedGraph, GraphNode, SourceRef, TensorStore, scope_of, user_frame
from bridge.runtimes.onnxruntime_runner import _ort_reason, load_onnx_checked, onnx_signature

if TYPE_CHECKING:
    from bridge.messages import CaptureRequest, CutRequest, CutResponse

CHUNK = 64
"""Intermediate tensors fetched per run: bounds what the capture holds at once."""
_METADATA_LIMIT = 20_000
"""Longest node metadata value read (a stranger's model may hold anything there)."""


def live_nodes(graph: Any) -> list[Any]:
    """The nodes that depend on the graph's inputs (constant and weight preparation left out), in graph order."""
    initializers = {t.name for t in graph.initializer}
    live = {i.name for i in graph.input if i.name not in initializers}
    nodes = []
    for node in graph.node:
        if any(name in live for name in _reads(node)):
            nodes.append(node)
            live.update(out for out in node.output if out)
    return nodes


def _reads(node: Any) -> Iterable[str]:
    """A node's inputs, and the outer values its subgraphs (If, Loop, Scan) read."""
    yield from (name for name in node.input if name)
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.HasField("g") else list(attribute.graphs)
        for sub in graphs:
            for inner in sub.node:
                yield from _reads(inner)


def source_of(node: Any) -> SourceRef | None:
    """Where the node comes from: the dynamo exporter's metadata, else the name scope in its name."""
    metadata = {p.key: p.value[:_METADATA_LIMIT] for p in node.metadata_props}
    scopes = _literal_list(metadata.get("pkg.torch.onnx.name_scopes", ""))
    classes = _literal_list(metadata.get("pkg.torch.onnx.class_hierarchy", ""))
    if scopes:
        # ['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d']: the innermost module, then the op.
        module = next((s for s in reversed(scopes[:-1]) if s), "")
        module_class = classes[-2] if len(classes) >= 2 else ""
        location, code = user_frame(metadata.get("pkg.torch.onnx.stack_trace", ""))
        return SourceRef(module, module_class, location, code)
    scope = scope_of(node.name)
    return SourceRef(scope.strip("/").replace("/", ".")) if scope else None


def _literal_list(text: str) -> list[str]:
    if not text.startswith("["):
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def node_name(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def capture(request: CaptureRequest, feeds: dict[str, Any], store: TensorStore,
            history: list[dict[str, Any]]) -> CapturedGraph:
    """`history` is not replayed: this runtime keeps no state between calls."""
    import onnx
    import onnxruntime as ort

    checked = load_onnx_checked(request.path)
    model = onnx.load(str(request.path))  # external data, checked above to stay beside the model
    graph = model.graph
    signature = onnx_signature(checked)
    nodes = live_nodes(graph)
    outputs = [o.name for o in graph.output]
    extra = [out for node in nodes for out in node.output if out and out not in outputs]
    graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in extra)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bridge-capture-") as tmp:
        widened = Path(tmp, "model.onnx")
        large = model.ByteSize() > 1_800_000_000 or any(t.external_data for t in checked.graph.initializer)
        onnx.save(model, str(widened), save_as_external_data=large)
        del model, graph
        try:
            session = ort.InferenceSession(str(widened), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph types
            raise InputError(f"{request.path}: onnxruntime cannot run it with every intermediate kept "
                             f"({_ort_reason(exc)})") from exc
        for name, value in feeds.items():
            store.put(name, value)
        names = [*outputs, *extra]
        captured: dict[str, Any] = {}
        for start in range(0, len(names), CHUNK):
            chunk = names[start:start + CHUNK]
            for name, value in zip(chunk, session.run(chunk, feeds), strict=True):
                store.put(name, value)
                if name in outputs:
                    captured[name] = value
        del session
    reference = ort.InferenceSession(str(request.path), providers=["CPUExecutionProvider"])
    for name, value in zip(outputs, reference.run(outputs, feeds), strict=True):
        got = captured.get(name)
        if got is not None and got.dtype.kind == "f" and got.shape == value.shape:
            diff = float(np.max(np.abs(got.astype(np.float64) - value), initial=0.0))
            if diff > 1e-5 * max(1.0, float(np.max(np.abs(value), initial=0.0))):
                notes.append(f"output {name}: the unoptimised capture differs from the optimised run by {diff:.3g} "
                             "(onnxruntime's graph optimisations change the numbers)")
    return CapturedGraph(
        nodes=tuple(GraphNode(node_name(n, i), n.op_type, tuple(x for x in n.input if x), tuple(o for o in n.output if o),
                              source_of(n)) for i, n in enumerate(nodes)),
        inputs=tuple(s.name for s in signature.inputs), outputs=tuple(outputs), keys=dict(store.keys),
        notes=tuple(notes),
    )


def cut_model(request: CutRequest) -> CutResponse:
    """Write the sub-graph of `request.path` that computes `request.outputs` from the graph inputs."""
    import onnx
    from onnx.utils import Extractor

    from bridge.messages import CutResponse

    load_onnx_checked(request.path)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(request.path)))
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    typed = {v.name for v in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    missing = [name for name in request.outputs if name not in typed]
    if missing:
        raise InputError(f"{request.path}: cannot cut the graph at {missing[0]!r}: shape inference gives it no type")
    extracted = Extractor(model).extract_model(inputs, list(request.outputs))
    # Keep every graph input even if the prefix does not read it, so the feeds stay the parent's.
    kept = {i.name for i in extracted.graph.input}
    extracted.graph.input.extend(i for i in model.graph.input if i.name in inputs and i.name not in kept)
    order = {name: k for k, name in enumerate(inputs)}
    ordered = sorted(extracted.graph.input, key=lambda v: order.get(v.name, len(order)))
    del extracted.graph.input[:]
    extracted.graph.input.extend(ordered)
    large = extracted.ByteSize() > 1_800_000_000
    onnx.save(extracted, str(request.out_path), save_as_external_data=large)
    return CutResponse(onnx_signature(extracted), len(extracted.graph.node))
