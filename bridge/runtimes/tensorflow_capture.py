"""TensorFlow captures for localisation: a SavedModel's frozen graph with every op's output fetched, and a
Keras functional model with every layer's output.

The SavedModel's serving function is frozen (variables folded into constants) and imported into a
plain graph; the ops that depend on its inputs are fetched a chunk at a time. Converters name those
ops their own way (onnx2tf's are generic), so such a graph is usually joined by values. A Keras
model is rebuilt as a model whose outputs are every layer's output: layers are named, and the name
is the source's term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.errors import InputError
from bridge.localization.graph import CapturedGraph, GraphNode, SourceRef, TensorStore

if TYPE_CHECKING:
    from bridge.messages import CaptureRequest

CHUNK = 64
_KEPT_DTYPES = ("float", "int", "uint", "bool", "bfloat")


def capture(request: CaptureRequest, feeds: dict[str, Any], store: TensorStore,
            history: list[dict[str, Any]]) -> CapturedGraph:
    """`history` is not replayed: this runtime keeps no state between calls."""
    import gc

    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from bridge.runtimes.tensorflow_runner import load_saved_model

    loaded, function = load_saved_model(request.path)
    frozen = convert_variables_to_constants_v2(function)  # the serving function inlined, variables as constants
    graph_def = frozen.graph.as_graph_def()
    _, kwargs = function.structured_input_signature
    input_tensors = {name: f"{spec.name or name}:0" for name, spec in kwargs.items()}
    # The frozen function's outputs are the signature's, flattened as tf.nest does a dict: by sorted key.
    output_tensors = dict(zip(sorted(function.structured_outputs), (t.name for t in frozen.outputs), strict=True))
    order = list(function.structured_outputs)
    del frozen, function, loaded
    gc.collect()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    del graph_def
    live = {input_tensors[name] for name in feeds}
    ops = _topological([op for op in graph.get_operations() if op.type not in ("NoOp", "Const", "Placeholder")])
    nodes, fetch = [], []
    for op in ops:
        reads = [t.name for t in op.inputs if t.name in live]
        if not reads:
            continue
        writes = [t.name for t in op.outputs if t.dtype.name.startswith(_KEPT_DTYPES)]
        live.update(writes)
        fetch += writes
        nodes.append(GraphNode(op.name, op.type, tuple(reads), tuple(writes)))
    # A plain session with grappler off: each op computes what the graph says, and no optimised copy
    # of the graph is built per chunk (a pruned function per chunk doubled the peak on resnet18).
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    feed_dict = {graph.get_tensor_by_name(input_tensors[name]): value for name, value in feeds.items()}
    for name, value in feeds.items():
        store.put(input_tensors[name], value)
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        for start in range(0, len(fetch), CHUNK):
            chunk = fetch[start:start + CHUNK]
            for name, value in zip(chunk, session.run(chunk, feed_dict), strict=True):
                store.put(name, value)
    return CapturedGraph(tuple(nodes), tuple(input_tensors[n] for n in kwargs), tuple(output_tensors[n] for n in order),
                         dict(store.keys))


def _topological(ops: list[Any]) -> list[Any]:
    """`ops` so that each comes after the ops whose outputs it reads (a GraphDef's order is not promised)."""
    position = {op.name: k for k, op in enumerate(ops)}
    done: set[str] = set()
    ordered: list[Any] = []
    for root in ops:
        stack = [(root, False)]
        while stack:
            op, expanded = stack.pop()
            if op.name in done:
                continue
            if expanded:
                done.add(op.name)
                ordered.append(op)
                continue
            stack.append((op, True))
            stack.extend((t.op, False) for t in op.inputs if t.op.name in position and t.op.name not in done)
    return ordered


def capture_keras(request: CaptureRequest, feeds: dict[str, Any], store: TensorStore,
                  history: list[dict[str, Any]]) -> CapturedGraph:
    """`history` is not replayed: this runtime keeps no state between calls."""
    import keras

    from bridge.runtimes.tensorflow_runner import load_keras

    model = load_keras(request.path, trust_code=request.trust_code)
    if not getattr(model, "inputs", None) or isinstance(model, keras.Model) and not hasattr(model, "_operations"):
        raise InputError(f"{request.path}: a subclassed Keras model has no graph of layers to capture; "
                         "build it with the functional API to localise its hops")
    names: dict[int, str] = {}
    for spec, tensor in zip(model.inputs, model.inputs, strict=True):
        names[id(tensor)] = spec.name
    nodes, outputs = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        produced = keras.tree.flatten(layer.output)
        writes = [layer.name if len(produced) == 1 else f"{layer.name}:{i}" for i in range(len(produced))]
        inbound = layer._inbound_nodes[0].input_tensors if layer._inbound_nodes else []  # noqa: SLF001
        reads = [names[id(t)] for t in inbound if id(t) in names]
        for tensor, name in zip(produced, writes, strict=True):
            names[id(tensor)] = name
            outputs.append(tensor)
        nodes.append(GraphNode(layer.name, type(layer).__name__, tuple(reads), tuple(writes),
                               SourceRef(layer.name, type(layer).__name__)))
    every = keras.Model(model.inputs, outputs)
    args = [feeds[t.name] for t in model.inputs]
    values = keras.tree.flatten(every(args if len(args) > 1 else args[0], training=False))
    for name, value in feeds.items():
        store.put(name, value)
    for tensor, value in zip(outputs, values, strict=True):
        store.put(names[id(tensor)], keras.ops.convert_to_numpy(value))
    final = [names.get(id(t), "") for t in model.outputs]
    return CapturedGraph(tuple(nodes), tuple(t.name for t in model.inputs), tuple(final), dict(store.keys))
