"""Per-layer quantization error: which operations of the float parent lose the most in its quantized child.

Verify does this for every quantized (or float16) artifact that ran on the CPU, passing or not:
parent and child are captured on one sample (the one whose outputs lose the most), their tensors
joined by name where the quantizer kept them (onnxruntime's QDQ graph, the names onnx2tf
recorded) and by value otherwise (bridge.localization.join), and each joined tensor is measured
by its SQNR against the float one. What an operation *loses* is the SQNR of its inputs (the lowest)
less the SQNR of its output: an operation that only carries its inputs' noise loses nothing. The
`top` that lose the most are reported in graph order (docs/quantization.md).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.localization.graph import CapturedGraph, SourceRef, TensorReader
from bridge.localization.join import CHANNELS_FIRST, CHANNELS_LAST, NAME_COVERAGE, RESHAPED, SAME, ValueIndex, move_to, name_pairs
from bridge.localization.result import BY_NAMES, BY_VALUES
from bridge.verification.compare import SQNR_CAP_DB, sqnr_db, to_source_layout

_LAYOUTS = (SAME, CHANNELS_LAST, CHANNELS_FIRST, RESHAPED)
_VALUE_JOIN_TOLERANCE = 0.1
"""Only ranks the child's candidate tensors when joining by value; the figure kept is the SQNR."""


@dataclass(frozen=True)
class LayerLoss:
    """One parent operation's output against the child's tensor joined to it."""

    node: str
    op: str
    tensor: str
    target: str
    """The child tensor it was compared with."""
    sqnr_db: float
    """Its output in the quantized child against the float parent."""
    lost_db: float
    """The lowest SQNR of its inputs less `sqnr_db`: what this operation adds to the quantization noise."""
    max_abs: float | None
    """None when not finite."""
    source: SourceRef | None = None
    fused: tuple[str, ...] = ()
    """Parent operations before this one that have no tensor of their own in the child (``Gemm node_linear`` fused
    into the FULLY_CONNECTED that also applies this Relu): the loss may be in any of them."""

    def describe(self) -> str:
        where = f" in {self.source.describe()}" if self.source and self.source.describe() else ""
        figure = f"max abs {self.max_abs:.3g}" if self.max_abs is not None else "not finite"
        fused = f" (computed together with {', '.join(self.fused[:4])})" if self.fused else ""
        return (f"{self.op} {self.node}{fused}{where}: SQNR {self.sqnr_db:.1f} dB, loses {self.lost_db:.1f} dB "
                f"({figure}; {self.tensor} -> {self.target})")


@dataclass(frozen=True)
class LayerErrors:
    """The operations of one quantized hop that lose the most, in graph order."""

    hop: str
    """``PARENT -> CHILD`` with the folder's keys (``tflite -> tflite-int8``)."""
    formats: str
    sample: int
    method: str
    """How the tensors were joined: ``names``, ``values``, or '' when they could not be."""
    layers: tuple[LayerLoss, ...]
    compared: int
    nodes: int
    seconds: float
    reason: str = ""
    """Why no layer is named."""

    @property
    def worst(self) -> LayerLoss | None:
        return max(self.layers, key=lambda layer: layer.lost_db, default=None)

    def lines(self) -> list[str]:
        if not self.layers:
            return [f"{self.hop}: per-layer error not measured: {self.reason}"]
        out = [f"{self.hop}: the {len(self.layers)} operations that lose the most (graph order, sample {self.sample}, "
               f"joined by {self.method}; * loses the most):"]
        worst = self.worst
        out += [f"  {'*' if layer is worst else ' '} {layer.describe()}" for layer in self.layers]
        out.append(f"  {self.compared} tensors compared over {self.nodes} operations in {self.seconds:.1f} s")
        return out

    def to_markdown(self) -> str:
        lines = [f"#### {self.hop} ({self.formats})", ""]
        if not self.layers:
            return "\n".join([*lines, f"Not measured: {self.reason}", ""]) + "\n"
        lines += ["| op | node | fused with | source | SQNR dB | loses dB | max abs |", "|---|---|---|---|---|---|---|"]
        for layer in self.layers:
            source = layer.source.describe() if layer.source else ""
            figure = f"{layer.max_abs:.3g}" if layer.max_abs is not None else "-"
            lines.append(f"| {layer.op} | `{layer.node}` | {', '.join(layer.fused)} | {source} | {layer.sqnr_db:.1f} | "
                         f"{layer.lost_db:.1f} | {figure} |")
        lines += ["", f"Joined by {self.method}; {self.compared} tensors compared over {self.nodes} operations on sample "
                      f"{self.sample} in {self.seconds:.1f} s.", ""]
        return "\n".join(lines) + "\n"


def _best_layout(expected: NDArray[Any], actual: NDArray[Any]) -> tuple[float, float] | None:
    """(SQNR, max abs) of `actual` against `expected` in the layout where it is closest; None when no layout fits."""
    if expected.size != actual.size:
        return None
    e = np.asarray(expected, dtype=np.float64)
    best: tuple[float, float] | None = None
    for layout in _LAYOUTS:
        moved = move_to(actual, expected.shape, layout)
        if moved is None:
            continue
        a = np.asarray(moved, dtype=np.float64)
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(e))):
            found = (-SQNR_CAP_DB, float("inf"))
        else:
            found = (sqnr_db(e.ravel(), a.ravel()), float(np.max(np.abs(a - e), initial=0.0)))
        if best is None or found[0] > best[0]:
            best = found
    return best


def worst_sample(expected: Mapping[str, NDArray[Any]], actual: Mapping[str, NDArray[Any]]) -> int:
    """The sample whose outputs (source names, ``[samples, ...]``) have the lowest SQNR."""
    worst, index = float("inf"), 0
    for name, e in expected.items():
        a = actual.get(name)
        if a is None or a.shape != e.shape or e.dtype.kind != "f" or len(e) == 0:
            continue
        for k in range(len(e)):
            found = sqnr_db(np.asarray(e[k], dtype=np.float64).ravel(), np.asarray(a[k], dtype=np.float64).ravel())
            if found < worst:
                worst, index = found, k
    return index


def layer_errors(hop: Any, parent: CapturedGraph, child: CapturedGraph, expected: TensorReader, actual: TensorReader,
                 top: int, sample: int) -> LayerErrors:
    """Join the two captures and measure every joined tensor; the `top` operations that lose the most."""
    from bridge.localization.run import boundary_tensors

    measured: dict[str, tuple[float, float, str]] = {}  # parent tensor -> (SQNR, max abs, child tensor)
    for tensor, target, parent_spec, child_spec in boundary_tensors(hop, parent, child):
        e, a = expected.get(tensor), actual.get(target)
        if e is not None and a is not None:
            found = _best_layout(to_source_layout(e, parent_spec.perm), to_source_layout(a, child_spec.perm))
            if found is not None:
                measured[tensor] = (*found, target)
    pairs = name_pairs(parent, child)
    inner = [t for node in parent.nodes for t in node.outputs if t not in measured]
    by_names = bool(inner) and sum(1 for t in inner if t in pairs) >= NAME_COVERAGE * len(inner)
    index: ValueIndex | None = None
    for tensor in inner:
        e = expected.get(tensor)
        if e is None or e.dtype.kind != "f":
            continue
        target = pairs.get(tensor, "") if by_names else ""
        if not target:
            index = index or ValueIndex(child, actual)
            closest = index.closest(e, _VALUE_JOIN_TOLERANCE, _VALUE_JOIN_TOLERANCE)
            target = closest.target if closest is not None else ""
        a = actual.get(target) if target else None
        found = _best_layout(e, a) if a is not None else None
        if found is not None:
            measured[tensor] = (*found, target)
    # A child tensor joined to several parent tensors is the output of ops the child fused (Gemm and its Relu in
    # one FULLY_CONNECTED): it stands for the one it is closest to; the others are computed inside the fusion.
    best: dict[str, str] = {}
    for tensor, (sqnr, _, target) in measured.items():
        if target not in best or sqnr > measured[best[target]][0]:
            best[target] = tensor
    measured = {tensor: found for tensor, found in measured.items() if best[found[2]] == tensor}
    base = dict(hop=hop.name, formats=hop.formats, sample=sample, nodes=len(parent.nodes))
    inner_measured = sum(1 for t in inner if t in measured)
    if not inner_measured:
        return LayerErrors(**base, method="", layers=(), compared=len(measured), seconds=0.0,
                           reason="no intermediate tensor of the float parent could be joined to the quantized child's")
    producers = parent.producers()
    noise: dict[str, float] = {}

    def level(tensor: str, seen: frozenset[str] = frozenset()) -> float:
        """The SQNR reaching `tensor`: its own where measured, else the lowest of what its producer reads."""
        if tensor in measured:
            return measured[tensor][0]
        if tensor in noise:
            return noise[tensor]
        producer = producers.get(tensor)
        if producer is None or tensor in seen or not producer.inputs:
            return SQNR_CAP_DB
        noise[tensor] = min(level(t, seen | {tensor}) for t in producer.inputs)
        return noise[tensor]

    def fused_with(node: Any) -> tuple[str, ...]:
        """The operations feeding `node` whose outputs were not measured, back to measured tensors."""
        found: list[str] = []
        stack = [t for t in node.inputs if t not in measured]
        seen: set[str] = set()
        while stack:
            producer = producers.get(stack.pop())
            if producer is None or producer.name in seen:
                continue
            seen.add(producer.name)
            found.append(f"{producer.op} {producer.name}")
            stack.extend(t for t in producer.inputs if t not in measured)
        return tuple(reversed(found))

    losses: list[tuple[int, LayerLoss]] = []
    for position, node in enumerate(parent.nodes):
        outs = [t for t in node.outputs if t in measured]
        if not outs:
            continue
        tensor = min(outs, key=lambda t: measured[t][0])
        own, max_abs, target = measured[tensor]
        reaching = min((level(t) for t in node.inputs), default=SQNR_CAP_DB)
        losses.append((position, LayerLoss(node.name, node.op, tensor, target, round(own, 2),
                                           round(max(0.0, reaching - own), 2),
                                           max_abs if np.isfinite(max_abs) else None, node.source, fused_with(node))))
    chosen = sorted((item for item in losses if item[1].lost_db > 0), key=lambda item: -item[1].lost_db)[:top]
    layers = tuple(layer for _, layer in sorted(chosen, key=lambda item: item[0]))
    return LayerErrors(**base, method=BY_NAMES if by_names else BY_VALUES, layers=layers, compared=len(measured),
                       seconds=0.0, reason="" if layers else "no operation adds quantization noise on this sample")


def quantized_layers(subjects: Sequence[Any], comparisons: Sequence[Any], outputs: Mapping[str, Mapping[str, NDArray[Any]]],
                     source_inputs: Mapping[str, NDArray[Any]], manifest: Any, folder: Path, options: Any,
                     top: int) -> tuple[LayerErrors, ...]:
    """Per-layer error of each quantized artifact that ran on the CPU beside its parent, passing or not."""
    from bridge.localization.run import HopSubjects, LocalizeSettings, capture_sides
    from bridge.options import tolerance_rules_of

    by_name = {s.name: s for s in subjects}
    settings = LocalizeSettings(tolerance_rules_of(options), top, 0, False, options.timeout, options.trust_pickle,
                                options.trust_code)
    found = []
    for comparison in comparisons:
        child = by_name.get(comparison.dst)
        if comparison.kind != "hop" or comparison.device != "cpu" or child is None or child.precision == "float32" \
                or comparison.src not in by_name:
            continue
        hop = HopSubjects(by_name[comparison.src], child)
        started = time.perf_counter()
        sample = worst_sample(outputs[f"{comparison.src}@cpu"], outputs[f"{comparison.dst}@cpu"])
        history = {name: array[:sample + 1] for name, array in source_inputs.items()}
        with tempfile.TemporaryDirectory(prefix="bridge-layers-") as work:
            captured = capture_sides(hop, manifest, folder, history, settings, Path(work))
            parent, kid = captured["parent"], captured["child"]
            if isinstance(parent, str) or isinstance(kid, str):
                why = f"the parent cannot be captured: {parent}" if isinstance(parent, str) else \
                    f"the child cannot be captured: {kid}"
                result = LayerErrors(hop.name, hop.formats, sample, "", (), 0, 0, 0.0, reason=why)
            else:
                expected, actual = TensorReader(*parent), TensorReader(*kid)
                try:
                    result = layer_errors(hop, parent[0], kid[0], expected, actual, top, sample)
                finally:
                    expected.close()
                    actual.close()
        from dataclasses import replace

        found.append(replace(result, seconds=round(time.perf_counter() - started, 3)))
    return tuple(found)
