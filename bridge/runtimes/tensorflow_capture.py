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
    try:
        graph_inputs = list(model.inputs)
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        graph_inputs = []
    if not graph_inputs:
        raise InputError(f"{request.path}: a subclassed Keras model has no graph of layers to capture; "
                         "build it with the functional API to localise its hops")
    def tensor_name(layer: Any, index: int, count: int) -> str:
        return str(layer.name) if count == 1 else f"{layer.name}:{index}"

    def producer(tensor: Any) -> str:
        """The name of a KerasTensor by the layer that made it (its ``_keras_history``)."""
        layer, _, index = tensor._keras_history  # noqa: SLF001 - Keras's record of a tensor's producer
        if isinstance(layer, keras.layers.InputLayer):
            return str(next((t.name for t in graph_inputs if t._keras_history[0] is layer), layer.name))  # noqa: SLF001
        return tensor_name(layer, index, len(keras.tree.flatten(layer.output)))

    nodes, outputs, output_names = [], [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        produced = keras.tree.flatten(layer.output)
        writes = [tensor_name(layer, i, len(produced)) for i in range(len(produced))]
        reads = [producer(t) for t in keras.tree.flatten(layer.input)]
        outputs += produced
        output_names += writes
        nodes.append(GraphNode(layer.name, type(layer).__name__, tuple(reads), tuple(writes),
                               SourceRef(layer.name, type(layer).__name__)))
    every = keras.Model(graph_inputs, outputs)
    args = [feeds[t.name] for t in graph_inputs]
    values = keras.tree.flatten(every(args if len(args) > 1 else args[0], training=False))
    for name, value in feeds.items():
        store.put(name, value)
    for name, value in zip(output_names, values, strict=True):
        store.put(name, keras.ops.convert_to_numpy(value))
    final = [producer(t) for t in model.outputs]
    return CapturedGraph(tuple(nodes), tuple(t.name for t in graph_inputs), tuple(final), dict(store.keys))
