"""Large weights: onnx2tf converts a stand-in graph, and the real weights are written into its output afterwards.

onnx2tf holds a model's weights many times over (its ONNX graph, the graph-surgeon copy, the TF
or flatbuffer builder's tensors, the output's bytes): 9-14x the weight bytes at its peak
(bench/README.md), so a 2.25 GiB model does not fit in 23 GB. The ``large_weights`` candidate of
the onnx -> tflite and onnx -> tf hops (bridge/registry.py; tried first for a parent whose weights
reach ``defaults.large_weights_threshold()``, never otherwise unless ``--only``/``--prefer``
names it) avoids that:

1. `stand_in` writes a copy of the ONNX graph in which every large 2-D weight read by a MatMul,
   a Gemm or a Gather is a *graph input* instead of an initializer, without its data. A Gemm
   becomes MatMul (+ Add of its bias), its weight fed already transposed when ``transB`` is set,
   so onnx2tf lowers it to BATCH_MATMUL on an input. onnx2tf converts a graph of kilobytes.
2. The weights are read one at a time from the ONNX file's external data (``np.memmap``, never
   the whole file) and written into what onnx2tf made:
   - `attach_to_tflite`: each as a buffer placed after the flatbuffer by offset (``Buffer.offset``
     and ``size`` of the TFLite schema, the form LiteRT loads for models past 2 GB), the input it
     stood for made a constant and removed from the subgraph's inputs and its signature;
   - `attach_to_saved_model`: as variables of a SavedModel that wraps onnx2tf's and feeds them,
     saved as checkpoint shards (a GraphDef of constants would hit protobuf's 2 GB).
3. The artifact is then run and checked against its parent like every other one.

Only float32 and float16 weights of rank 2 are moved; the rest stay in the graph as they were.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.errors import HopError, NotApplicableError
from bridge.formats import Format
from bridge.hops.base import HopJob, HopResult, Produced
from bridge.hops.onnx2tf_common import DIRECT, channels_last_outputs, hop_perms, inputs_kept_by_rule, run_onnx2tf
from bridge.hops.tf_to_tflite import tflite_name
from bridge.runtimes.base import read_signature
from bridge.signature import carry_layout

MIN_WEIGHT_BYTES = 64 * 1024
"""Smaller weights stay in the graph: they cost onnx2tf nothing worth the bookkeeping."""
ALIGN = 64
"""Each weight placed after the flatbuffer starts on this boundary (XNNPACK and memory maps like it aligned)."""
PREFIX = "bridge_weight_"
_MOVABLE_DTYPES = {1: "float32", 10: "float16"}  # onnx.TensorProto.FLOAT, FLOAT16
_CHUNK = 64 * 1024**2


@dataclass(frozen=True)
class Weight:
    """One weight made a graph input of the stand-in: where its bytes are, and how they are fed."""

    name: str
    """The stand-in graph's input (``bridge_weight_N``)."""
    onnx_name: str
    shape: tuple[int, ...]
    """As fed: the initializer's shape, reversed when `transpose`."""
    dtype: str
    transpose: bool
    file: Path | None
    """The external data file; None when the bytes were inside the ONNX file (held in `StandIn.inline`)."""
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass
class StandIn:
    """The stand-in graph onnx2tf converts, and the weights it stands in for."""

    onnx: Path
    weights: list[Weight]
    inline: dict[str, NDArray[Any]] = field(default_factory=dict)

    def array(self, weight: Weight) -> NDArray[Any]:
        """The weight as fed (transposed if it must be), read from its file by memory map."""
        if weight.file is None:
            stored = self.inline[weight.name]
        else:
            stored_shape = weight.shape[::-1] if weight.transpose else weight.shape
            stored = np.memmap(weight.file, dtype=np.dtype(weight.dtype).newbyteorder("<"), mode="r",
                               offset=weight.offset, shape=stored_shape)
        return np.ascontiguousarray(stored.T if weight.transpose else stored)

    def chunks(self, weight: Weight) -> Iterator[bytes]:
        """The weight's bytes as fed, in pieces: an untransposed external weight is never held whole."""
        if weight.file is not None and not weight.transpose:
            with open(weight.file, "rb") as f:
                f.seek(weight.offset)
                left = weight.nbytes
                while left:
                    piece = f.read(min(left, _CHUNK))
                    if not piece:
                        raise HopError(f"{weight.file}: ends before weight {weight.onnx_name!r} does")
                    left -= len(piece)
                    yield piece
            return
        yield self.array(weight).tobytes()

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


def stand_in(onnx_path: Path, folder: Path) -> StandIn:
    """Write the stand-in of `onnx_path` as ``folder/model.onnx``; NotApplicableError if no weight can be moved."""
    import onnx
    from onnx import external_data_helper, helper, numpy_helper

    from bridge.safety import check_onnx_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    check_onnx_external_data(model, onnx_path)
    graph = model.graph
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    taken = {v.name for v in (*graph.input, *graph.output, *graph.value_info)} | {o for n in graph.node for o in n.output}
    taken |= {t.name for t in graph.initializer}
    weights: list[Weight] = []
    inline: dict[str, NDArray[Any]] = {}
    renames: dict[str, str] = {}
    for tensor in graph.initializer:
        uses = consumers.get(tensor.name, [])
        if len(tensor.dims) != 2 or tensor.data_type not in _MOVABLE_DTYPES or not uses:
            continue
        dtype = _MOVABLE_DTYPES[tensor.data_type]
        if int(np.prod(tensor.dims)) * np.dtype(dtype).itemsize < MIN_WEIGHT_BYTES:
            continue
        kinds = {_use(node, position) for node, position in uses}
        if None in kinds or len(kinds) != 1:
            continue  # read by an op onnx2tf needs constant, or once transposed and once not
        transpose = kinds == {"gemm-transposed"}
        name = _fresh(f"{PREFIX}{len(weights)}", taken)
        stored = tuple(int(d) for d in tensor.dims)
        shape = stored[::-1] if transpose else stored
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = external_data_helper.ExternalDataInfo(tensor)
            file = onnx_path.parent / info.location
            weight = Weight(name, tensor.name, shape, dtype, transpose, file, int(info.offset or 0))
            if info.length is not None and int(info.length) != weight.nbytes \
                    or weight.offset + weight.nbytes > file.stat().st_size:
                raise HopError(f"{onnx_path}: the external data of {tensor.name!r} ({info.location}) does not hold "
                               f"its {weight.nbytes} bytes; export the model again")
        else:
            weight = Weight(name, tensor.name, shape, dtype, transpose, None)
            inline[name] = numpy_helper.to_array(tensor)
        weights.append(weight)
        renames[tensor.name] = name
    if not weights:
        raise NotApplicableError("no weight of this model is a 2-D float matrix read by MatMul, Gemm or Gather: "
                                 "nothing to stand in for")
    nodes = []
    for node in graph.node:
        if node.op_type == "Gemm" and node.input[1] in renames:
            product = _fresh(f"{node.output[0]}__matmul", taken) if len(node.input) > 2 and node.input[2] else node.output[0]
            nodes.append(helper.make_node("MatMul", [node.input[0], renames[node.input[1]]], [product], name=node.name))
            if product != node.output[0]:
                nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                              name=f"{node.name}__bias" if node.name else ""))
            continue
        for position, name in enumerate(node.input):
            if name in renames:
                node.input[position] = renames[name]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if t.name not in renames]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inline_external(model, onnx_path.parent)  # what stays is small: read into the stand-in
    for old in [i for i in graph.input if i.name in renames]:  # IR < 4 lists initializers as inputs too
        graph.input.remove(old)
    for weight in weights:
        graph.input.append(helper.make_tensor_value_info(weight.name, _onnx_type(weight.dtype), list(weight.shape)))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    onnx.save(model, str(target))
    return StandIn(target, weights, inline)


def inline_external(model: Any, folder: Path, below: int | None = None) -> int:
    """Read into `model` the external data of its initializers (those under `below` bytes, or all); how many.

    The model's external data must have passed ``safety.check_onnx_external_data`` (locations inside `folder`).
    """
    import onnx
    from onnx import external_data_helper

    count = 0
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        length = external_data_helper.ExternalDataInfo(tensor).length
        if below is not None and (length is None or int(length) >= below):
            continue
        external_data_helper.load_external_data_for_tensor(tensor, str(folder))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
        count += 1
    return count


def external_bytes(model: Any) -> int:
    """The bytes of the initializers `model` still keeps in external data (as their ``length`` entries say)."""
    from onnx import external_data_helper

    lengths = (external_data_helper.ExternalDataInfo(t).length for t in model.graph.initializer if t.external_data)
    return sum(int(length) for length in lengths if length is not None)


def _use(node: Any, position: int) -> str | None:
    """How a node reads a weight it may be fed as an input: ``matmul``, ``gemm``, ``gemm-transposed``; None if not."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        return "matmul"
    if node.op_type == "Gather" and position == 0 and attrs.get("axis", 0) == 0:
        return "matmul"  # fed as it is, like a MatMul's
    if node.op_type == "Gemm" and position == 1 and not attrs.get("transA", 0) \
            and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
        return "gemm-transposed" if attrs.get("transB", 0) else "matmul"
    return None


def _fresh(name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    taken.add(candidate)
    return candidate


def _onnx_type(dtype: str) -> int:
    import onnx

    return int(onnx.TensorProto.FLOAT if dtype == "float32" else onnx.TensorProto.FLOAT16)


# --- TFLite: buffers after the flatbuffer -----------------------------------------------------------

def attach_to_tflite(stand: StandIn, converted: Path, target: Path) -> None:
    """Write `converted` (onnx2tf's TFLite of the stand-in) to `target` with the weights as constants stored by offset."""
    import flatbuffers  # type: ignore[import-untyped]
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(converted.read_bytes(), 0))
    if len(model.subgraphs) != 1:
        raise HopError(f"{converted.name}: onnx2tf wrote {len(model.subgraphs)} subgraphs; the large-weight path takes one")
    subgraph = model.subgraphs[0]
    inputs = {subgraph.tensors[i].name.decode(): i for i in subgraph.inputs}
    placed = []
    for weight in stand.weights:
        index = inputs.get(weight.name)
        if index is None:
            raise HopError(f"{converted.name}: onnx2tf's TFLite has no input {weight.name!r} for ONNX weight "
                           f"{weight.onnx_name!r}; convert with another candidate")
        tensor = subgraph.tensors[index]
        if tuple(int(d) for d in tensor.shape) != weight.shape:
            raise HopError(f"{converted.name}: input {weight.name!r} has shape {list(tensor.shape)}, the ONNX weight "
                           f"{weight.onnx_name!r} {list(weight.shape)}; onnx2tf changed its layout")
        buffer = schema.BufferT()
        buffer.offset, buffer.size = 2, weight.nbytes  # a stand-in offset (valid ones are > 1), set below
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
        tensor.shapeSignature = None
        placed.append((buffer, weight))
    moved = {inputs[w.name] for w in stand.weights}
    subgraph.inputs = [i for i in subgraph.inputs if i not in moved]
    for signature in model.signatureDefs or []:
        signature.inputs = [m for m in signature.inputs if m.tensorIndex not in moved]

    def pack() -> bytes:
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = pack()
    position = _aligned(len(head))
    for buffer, weight in placed:
        buffer.offset = position
        position = _aligned(position + weight.nbytes)
    packed = pack()
    if len(packed) != len(head):  # the offsets' values cannot change the table's size; a check, not a hope
        raise HopError(f"{target.name}: the flatbuffer changed size when its weight offsets were set")
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "wb") as out:
        out.write(packed)
        for buffer, weight in placed:
            out.write(b"\0" * (buffer.offset - out.tell()))
            for piece in stand.chunks(weight):
                out.write(piece)
    os.replace(partial, target)


def _aligned(position: int) -> int:
    return (position + ALIGN - 1) // ALIGN * ALIGN


# --- TF: a SavedModel whose weights are variables ------------------------------------------------------

def attach_to_saved_model(stand: StandIn, converted: Path, target: Path) -> None:
    """Save at `target` a SavedModel whose ``serving_default`` takes the model's own inputs and feeds the weights,
    held as variables, to onnx2tf's SavedModel of the stand-in (`converted`)."""
    import tensorflow as tf

    inner = tf.saved_model.load(str(converted))
    function = inner.signatures["serving_default"]
    specs = dict(function.structured_input_signature[1])
    missing = [w.name for w in stand.weights if w.name not in specs]
    if missing:
        raise HopError(f"{converted.name}: onnx2tf's SavedModel takes no input {missing[0]!r}; convert with another candidate")
    names = sorted(k for k in specs if k not in {w.name for w in stand.weights})
    module = tf.Module()
    module.inner = inner
    module.weights = {}
    for weight in stand.weights:  # one at a time: each read from its file straight into its variable
        module.weights[weight.name] = tf.Variable(stand.array(weight), trainable=False, name=weight.name)

    @tf.function(input_signature=[tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names])  # type: ignore[untyped-decorator]
    def serve(*tensors: Any) -> Any:
        return function(**dict(zip(names, tensors, strict=True)), **module.weights)

    module.serve = serve
    tf.saved_model.save(module, str(target), signatures={"serving_default": serve})


# --- the candidate ---------------------------------------------------------------------------------------

def convert(job: HopJob, fmt: Format) -> HopResult:
    """The ``large_weights`` candidate of onnx -> tflite (`fmt` TFLITE) and onnx -> tf (TF)."""
    if job.options.fp16 or fmt in job.options.quantize_formats:
        raise NotApplicableError("--fp16 and --quantize are not made on the large-weight path (its weights are written "
                                 "as float32 buffers or variables): convert without them")
    stand = stand_in(job.src, job.out_dir / ".stand-in")
    work = job.out_dir / "onnx2tf"
    run = run_onnx2tf(stand.onnx, work, saved_model=fmt is Format.TF, backend=DIRECT)
    channels_last = channels_last_outputs(work)
    if fmt is Format.TFLITE:
        target = job.out_dir / tflite_name("float32")
        attach_to_tflite(stand, work / "model_float32.tflite", target)
    else:
        target = job.out_dir / "saved_model"
        attach_to_saved_model(stand, work, target)
    shutil.rmtree(work)
    shutil.rmtree(stand.onnx.parent)
    child = read_signature(fmt, target)
    perms, notes = hop_perms(job.signature, child, channels_last, inputs_kept_by_rule(job.src), f"onnx->{fmt.value}")
    written = "buffers placed after the flatbuffer by offset" if fmt is Format.TFLITE else "SavedModel variables"
    options = {**run.kwargs, "large_weights": {"weights": len(stand.weights), "bytes": stand.nbytes, "written_as": written,
                                               "gemm_as_matmul": sum(w.transpose for w in stand.weights)}}
    notes = (*notes, f"{len(stand.weights)} weights ({stand.nbytes / 1024**3:.2f} GiB) converted as graph inputs and "
                     f"written afterwards as {written}")
    return HopResult((Produced(target, carry_layout(job.signature, child, perms)),), options=options, notes=notes)


__all__ = ["MIN_WEIGHT_BYTES", "StandIn", "Weight", "attach_to_saved_model", "attach_to_tflite", "convert", "external_bytes",
           "inline_external", "stand_in"]
