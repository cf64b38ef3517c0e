"""Bisection: where a hop's tensors cannot be joined, cut the parent ONNX graph, convert the cut, compare, halve.

The parent's operations (those the chosen output depends on, in graph order) are the search
space. A cut at an operation's output is the graph that computes that tensor from the graph's
inputs (`CutRequest`, onnx.utils.Extractor); it is converted with the same hop and candidate as
the artifact, both are run on the sample, and their outputs compared. The graph inputs are known
to agree and the hop's output known to diverge, so each step halves the interval between the last
cut that agreed and the first that diverged, up to `max_steps` steps. A cut the hop cannot convert
or the child runtime cannot run ends the search with the interval found so far.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.errors import BridgeError
from bridge.isolation import run_isolated
from bridge.localization.graph import CapturedGraph, GraphNode
from bridge.localization.join import SAME, measure
from bridge.localization.result import BY_BISECTION, DIVERGES, NOT_LOCALISED, Localization, OpDrift
from bridge.localization.walk import ancestors
from bridge.manifest import Artifact
from bridge.messages import CutRequest, HopRequest
from bridge.options import ConvertOptions
from bridge.registry import DEFAULT_REGISTRY
from bridge.runtimes.registry import DEFAULT_RUNNERS
from bridge.signature import Signature, TensorSpec


def bisect(hop: Any, artifact: Artifact, graph: CapturedGraph | None, history: Mapping[str, NDArray[Any]], settings: Any,
           work: Path, base: dict[str, Any], why: str) -> Localization:
    """Find the first parent operation whose cut, converted, diverges (`hop` is a localization.run.HopSubjects).

    `history` holds the samples up to the one localised (``[samples, ...]``, source names): each cut runs them
    all in order, as verify did, and the last is compared.
    """

    def give_up(reason: str, steps: int = 0) -> Localization:
        return Localization(**base, status=NOT_LOCALISED, method=BY_BISECTION, first=None, top=(), outputs=(),
                            compared=0, nodes=len(graph.nodes) if graph else 0, seconds=0.0, steps=steps,
                            reason=f"{why}; bisection: {reason}")

    if graph is None:
        return give_up("the parent graph could not be read")
    outputs = [t for t, spec in zip(graph.outputs, hop.parent.signature.outputs, strict=False)
               if settings.output is None or spec.source_name == settings.output]
    cone = ancestors(graph, outputs)
    nodes = [n for n in graph.nodes if n.name in cone and any(t in graph.keys for t in n.outputs)]
    if not nodes:
        return give_up("the parent has no operation to cut at")
    spec = DEFAULT_REGISTRY.by_name(artifact.hop)
    # An artifact that names no candidate was made by the hop's usual first one (never the large-weight path).
    candidate = spec.candidate(artifact.candidate) if artifact.candidate else \
        next(c for c in spec.candidates if not c.settings.get("large_weights"))
    tolerance = settings.rules.for_output("", "float32")
    results: dict[int, OpDrift] = {}
    low, high = -1, len(nodes) - 1  # the graph inputs agree
    steps = 0
    failure = ""
    # First the whole: a hop that does not diverge when converted again cannot be bisected by converting.
    probe = [high]
    while probe and steps < settings.max_steps:
        middle = probe.pop()
        steps += 1
        try:
            drift = _try_cut(hop, nodes[middle], spec, candidate, history, settings, tolerance, work / f"cut{steps}")
        except BridgeError as exc:
            failure = f"the cut at {nodes[middle].name} could not be compared ({str(exc).splitlines()[0][:300]})"
            break
        results[middle] = drift
        if middle == len(nodes) - 1 and drift.passed:
            return give_up(f"converted again, the parent gives an artifact that agrees (max abs {drift.max_abs:.3g}): "
                           "the artifact is not what the hop makes now (changed since convert, or a converter that "
                           "is not deterministic)", steps)
        if drift.passed:
            low = middle
        else:
            high = middle
        if high - low > 1:
            probe.append((low + high) // 2)
    if high - low > 1 or high not in results:
        between = f"between {nodes[low].name if low >= 0 else 'the inputs'} and {nodes[high].name}"
        reason = failure or f"stopped after {steps} steps (--max-steps)"
        return give_up(f"{reason}; the first divergent operation is {between} ({high - low} operations)", steps)
    first = results[high]
    inputs_over = results[low].over if low in results else 0.0
    from dataclasses import replace

    first = replace(first, inputs_over=inputs_over)
    top = tuple(results[k] for k in sorted(results) if not results[k].passed)
    return Localization(**base, status=DIVERGES, method=BY_BISECTION, first=first, top=top, outputs=(),
                        compared=len(results), nodes=len(nodes), seconds=0.0, steps=steps,
                        reason=f"{why}; found by cutting the parent graph and converting each cut with the same "
                               f"hop and candidate ({candidate.name})")


def _try_cut(hop: Any, node: GraphNode, spec: Any, candidate: Any, history: Mapping[str, NDArray[Any]], settings: Any,
             tolerance: Any, work: Path) -> OpDrift:
    """Cut the parent at `node`'s first output, convert the cut, run both on the sample, compare."""
    from bridge.verification.run import Slot, Subject, feeds_for, run_representation

    tensor = node.outputs[0]
    work.mkdir(parents=True, exist_ok=True)
    cut_path = work / "cut.onnx"
    cut = run_isolated(CutRequest(hop.parent.path, (tensor,), cut_path), stage=f"cut at {node.name}",
                       timeout=settings.timeout, hide_gpu=True)
    parent_specs = {s.name: s for s in hop.parent.signature.inputs}
    inputs = tuple(parent_specs.get(s.name, s) for s in cut.signature.inputs)
    outputs = tuple(TensorSpec(s.name, s.shape, s.dtype, source_name=s.name) for s in cut.signature.outputs)
    prefix = Signature(inputs, outputs)
    made = run_isolated(HopRequest(spec, cut_path, prefix, work / "converted", ConvertOptions(), candidate),
                        stage=f"convert the cut at {node.name}", timeout=settings.timeout, hide_gpu=True)
    produced = made.produced[0]
    sides = []
    for name, fmt, path, signature in (("parent", hop.parent.format, cut_path, prefix),
                                       ("child", hop.child.format, produced.path, produced.signature)):
        subject = Subject(name, fmt, path, signature, None, "float32", "")
        feeds_path = work / f"{name}.feeds.npz"
        from bridge import inputs as inputs_mod

        inputs_mod.write_npz(feeds_path, feeds_for(subject, history))
        count = len(next(iter(history.values())))
        row, result = run_representation(Slot(subject, DEFAULT_RUNNERS.primary(fmt), "cpu", True), feeds_path, work, count,
                                         runs=1, warmup=0, timeout=settings.timeout, trust_pickle=settings.trust_pickle,
                                         trust_code=settings.trust_code)
        if result is None:
            raise BridgeError(f"{name} of the cut did not run: {row.error}")
        sides.append(result)
    expected, actual = np.asarray(sides[0][tensor][-1]), np.asarray(sides[1][tensor][-1])
    found = measure(expected, actual, tolerance.atol, tolerance.rtol, tensor, (SAME,))
    if found is None:
        raise BridgeError(f"the converted cut's output has shape {actual.shape}, the parent's {expected.shape}")
    return OpDrift(node=node.name, op=node.op, tensor=tensor, target=tensor, target_ops=(), max_abs=found.max_abs,
                   max_rel=found.max_rel, over=found.over, inputs_over=None, passed=found.over <= 1.0,
                   layout="signature", source=node.source)
