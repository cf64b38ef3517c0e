"""What a capture child returns: the graph it ran, in topological order, and where its tensors are.

A capture runs one artifact (or the source) on one sample with every intermediate tensor kept
(bridge/localization/capture_*.py, one per format, named by the format's `RunnerSpec.capture`).
The parent process never loads a model: it reads the `CapturedGraph` record and the tensors file,
one tensor at a time. Tensors are stored under short keys (``t0``, ``t1``...), never under the
model's own names, which may hold any character.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SourceRef:
    """Where an operation comes from, in the source's terms."""

    module: str = ""
    """The PyTorch module path (``layer2.0.conv1``), the Keras layer, or the name scope the converter recorded."""
    module_class: str = ""
    """``torch.nn.modules.conv.Conv2d``, ``Conv2D``..."""
    location: str = ""
    """``file.py:42`` of the user's code, where the tracer recorded it."""
    code: str = ""
    """That source line, as the tracer recorded it."""

    def describe(self) -> str:
        parts = []
        if self.module:
            parts.append(self.module + (f" ({self.module_class.rsplit('.', 1)[-1]})" if self.module_class else ""))
        if self.location:
            parts.append(self.location)
        return ", ".join(parts)


@dataclass(frozen=True)
class GraphNode:
    """One operation of a captured graph."""

    name: str
    op: str
    inputs: tuple[str, ...]
    """Tensor names it reads (only tensors that depend on the graph's inputs)."""
    outputs: tuple[str, ...]
    source: SourceRef | None = None


@dataclass(frozen=True)
class CapturedGraph:
    """A graph run on one sample with its intermediate tensors kept."""

    nodes: tuple[GraphNode, ...]
    """Operations that depend on the graph's inputs, in topological order."""
    inputs: tuple[str, ...]
    """Tensor names of the graph's inputs, in the order of the artifact's signature."""
    outputs: tuple[str, ...]
    """Tensor names of the graph's outputs, in the order of the artifact's signature."""
    keys: dict[str, str] = field(default_factory=dict)
    """Tensor name -> its key in the tensors file."""
    layouts: dict[str, str] = field(default_factory=dict)
    """Tensor name -> ``channels_last`` where the converter recorded that a tensor is stored channels-last."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Parent tensor name -> this graph's tensor name, where the converter recorded a rename
    (onnx2tf's tensor correspondence report, kept by the hop as ``tensor_names.json``)."""
    notes: tuple[str, ...] = ()
    """What the capture saw: a delegated run that differs from the captured one, tensors it could not keep."""

    def producers(self) -> dict[str, GraphNode]:
        return {out: node for node in self.nodes for out in node.outputs}


class TensorStore:
    """Writes arrays one at a time into an ``.npz`` (uncompressed zip) that `np.load` reads lazily.

    A capture never holds every intermediate at once on its side of the pipe: each is written
    as soon as it is known and dropped.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[str, str] = {}
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def put(self, name: str, array: Any) -> None:
        if name in self.keys:
            return
        value = np.asarray(array)
        if value.dtype.kind not in "biuf" or value.dtype.hasobject:
            return  # strings, objects: nothing to compare numerically
        key = f"t{len(self.keys)}"
        with self._zip.open(key + ".npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.ascontiguousarray(value), allow_pickle=False)  # type: ignore[no-untyped-call]
        self.keys[name] = key

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> TensorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TensorReader:
    """Reads one tensor of a capture at a time (the parent's side of `TensorStore`)."""

    def __init__(self, graph: CapturedGraph, path: Path) -> None:
        self.graph = graph
        self._file = np.load(path, allow_pickle=False)

    def has(self, name: str) -> bool:
        return name in self.graph.keys

    def get(self, name: str) -> NDArray[Any] | None:
        key = self.graph.keys.get(name)
        if key is None:
            return None
        array: NDArray[Any] = self._file[key]
        return array

    def close(self) -> None:
        self._file.close()


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)\n(?P<code>[^\n]*)')
_LIBRARY_PARTS = ("site-packages", "dist-packages", "/torch/", "/lib/python3")


def user_frame(stack_trace: str, cwd: Path | None = None) -> tuple[str, str]:
    """``(file:line, code)`` of the first frame in a recorded stack trace that is not a library's own.

    A file under `cwd` (the working directory) is named relative to it, as the user would type it.
    """
    frames = [m for m in _FRAME.finditer(stack_trace or "")]
    chosen = next((f for f in frames if not any(part in f["file"] for part in _LIBRARY_PARTS)), frames[0] if frames else None)
    if chosen is None:
        return "", ""
    file = Path(chosen["file"])
    base = cwd or Path.cwd()
    if file.is_absolute() and file.is_relative_to(base):
        file = file.relative_to(base)
    return f"{file.as_posix()}:{chosen['line']}", chosen["code"].strip()


def scope_of(name: str) -> str:
    """The name scope of an op called ``a/b/c/Op`` (``a/b/c``), as TorchScript's exporter and tf2onnx write them."""
    stripped = name.strip("/")
    return stripped.rsplit("/", 1)[0] if "/" in stripped else ""
