"""Localising one hop: capture parent and child on one sample, join their tensors, walk the parent's graph.

Both captures run in child processes (bridge.isolation, `CaptureRequest`); this process only reads
the tensors they wrote, one at a time, compares and drops each. Where the child cannot be captured
or its tensors cannot be joined, a parent ONNX graph is bisected instead (bridge.localization.bisect).
`explain` (bridge.localization.explain) and ``verify --localize`` both come here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge import inputs as inputs_mod
from bridge.errors import BridgeError
from bridge.formats import Format
from bridge.isolation import run_isolated
from bridge.localization.graph import CapturedGraph, TensorReader
from bridge.localization.join import NAME_COVERAGE, SAME, Measure, ValueIndex, measure, name_pairs
from bridge.localization.result import AGREES, BY_NAMES, BY_VALUES, DIVERGES, NOT_LOCALISED, Localization, OpDrift
from bridge.localization.walk import Walk, ancestors
from bridge.manifest import MANIFEST_NAME, Manifest, inside
from bridge.messages import CaptureRequest
from bridge.options import tolerance_rules_of
from bridge.runtimes.registry import DEFAULT_RUNNERS
from bridge.signature import TensorSpec
from bridge.verification.compare import ToleranceRules, to_source_layout

logger = logging.getLogger("bridge")


@dataclass(frozen=True)
class HopSubjects:
    """The two sides of one hop, as verify knows them (bridge.verification.run.Subject)."""

    parent: Any
    child: Any

    @property
    def name(self) -> str:
        return f"{self.parent.name} -> {self.child.name}"

    @property
    def formats(self) -> str:
        return f"{self.parent.format.value}->{self.child.format.value}"


@dataclass(frozen=True)
class LocalizeSettings:
    """How to localise: tolerances, how many top operations, bisection."""

    rules: ToleranceRules
    top: int
    max_steps: int
    bisect: bool
    timeout: float | None
    trust_pickle: bool
    trust_code: bool
    output: str | None = None


def worst_sample(expected: Mapping[str, NDArray[Any]], actual: Mapping[str, NDArray[Any]], outputs: tuple[TensorSpec, ...],
                 rules: ToleranceRules) -> int:
    """The sample on which `actual` is furthest over tolerance (outputs in the source's names, ``[samples, ...]``)."""
    worst, index = -1.0, 0
    for spec in outputs:
        e, a = expected.get(spec.name), actual.get(spec.name)
        if e is None or a is None or e.shape != a.shape or e.dtype.kind not in "fiub":
            continue
        tolerance = rules.for_output(spec.name, spec.dtype)
        ee, aa = e.astype(np.float64), a.astype(np.float64)
        over = np.abs(aa - ee) / (tolerance.atol + tolerance.rtol * np.abs(ee))
        over = np.where(np.isfinite(over), over, np.inf).reshape(len(e), -1).max(axis=1)
        if float(over.max()) > worst:
            worst, index = float(over.max()), int(over.argmax())
    return index


def localize_hop(hop: HopSubjects, manifest: Manifest, folder: Path, source_inputs: Mapping[str, NDArray[Any]],
                 sample: int, settings: LocalizeSettings, work: Path) -> Localization:
    """Where `hop` (of the conversion in `folder`) diverges on `sample` of `source_inputs` (source names, ``[samples, ...]``)."""

    started = time.perf_counter()
    # The samples up to this one, in verify's order: a stateful child computes on it what it computed in verify.
    history = {name: array[:sample + 1] for name, array in source_inputs.items()}
    artifact = next((a for a in manifest.artifacts if a.key == hop.child.name), None)
    candidate = artifact.candidate if artifact is not None else ""
    tolerance = settings.rules.for_output("", "float32")
    base: dict[str, Any] = dict(hop=hop.name, formats=hop.formats, candidate=candidate, sample=sample, output=settings.output,
                atol=tolerance.atol, rtol=tolerance.rtol)
    captured = capture_sides(hop, manifest, folder, history, settings, work)
    parent, child = captured["parent"], captured["child"]
    if isinstance(parent, tuple) and isinstance(child, tuple) and not settings.bisect:
        found = _join_and_walk(hop, parent, child, settings, base)
        if found.status != NOT_LOCALISED or hop.parent.format != Format.ONNX:
            return _timed(found, started)
        reason = found.reason
    elif isinstance(parent, str):
        reason = f"the parent cannot be captured: {parent}"
    elif isinstance(child, str):
        reason = f"the child cannot be captured: {child}"
    else:
        reason = "--bisect asked for"
    if hop.parent.format == Format.ONNX and artifact is not None:
        from bridge.localization.bisect import bisect

        parent_graph = parent[0] if isinstance(parent, tuple) else None
        return _timed(bisect(hop, artifact, parent_graph, history, settings, work, base, why=reason), started)
    return _timed(Localization(**base, status=NOT_LOCALISED, method="", first=None, top=(), outputs=(), compared=0,
                               nodes=0, seconds=0.0, reason=f"{reason}; and only an ONNX parent can be cut and bisected"),
                  started)


def capture_sides(hop: HopSubjects, manifest: Manifest, folder: Path, history: Mapping[str, NDArray[Any]],
                  settings: LocalizeSettings, work: Path) -> dict[str, tuple[CapturedGraph, Path] | str]:
    """Parent and child run on the last sample of `history` with every tensor kept, each in a child process:
    ``{"parent": (graph, tensors file) or the one-line reason it could not be captured, "child": ...}``."""
    from bridge.verification.run import feeds_for

    artifact = next((a for a in manifest.artifacts if a.key == hop.child.name), None)
    candidate = artifact.candidate if artifact is not None else ""
    captured: dict[str, tuple[CapturedGraph, Path] | str] = {}
    for side, subject in (("parent", hop.parent), ("child", hop.child)):
        feeds_path, tensors = work / f"{side}.feeds.npz", work / f"{side}.tensors.npz"
        inputs_mod.write_npz(feeds_path, feeds_for(subject, history))
        names = candidate if side == "parent" and subject.format == Format.TORCH and hop.child.format == Format.ONNX \
            and candidate.startswith("dynamo") else ""
        runner = DEFAULT_RUNNERS.primary(subject.format)
        recorded = next((a.name_map for a in manifest.artifacts if a.key == subject.name and a.name_map), None)
        name_map = inside(folder, recorded, folder / MANIFEST_NAME, "name_map") if recorded else None
        try:
            graph = run_isolated(CaptureRequest(
                runner, subject.path, feeds_path, tensors, names=names, name_map=name_map,
                input_specs=subject.signature.inputs,
                trust_pickle=settings.trust_pickle, trust_code=settings.trust_code,
            ), stage=f"capture {subject.name}", timeout=settings.timeout, hide_gpu=True)
            captured[side] = (graph, tensors)
        except BridgeError as exc:
            captured[side] = str(exc).splitlines()[0]
    return captured


def _timed(found: Localization, started: float) -> Localization:
    from dataclasses import replace

    return replace(found, seconds=round(time.perf_counter() - started, 3))


def _join_and_walk(hop: HopSubjects, parent_side: tuple[CapturedGraph, Path], child_side: tuple[CapturedGraph, Path],
                   settings: LocalizeSettings, base: dict[str, Any]) -> Localization:
    parent, parent_path = parent_side
    child, child_path = child_side
    expected, actual = TensorReader(parent, parent_path), TensorReader(child, child_path)
    try:
        return _walk(hop, parent, child, expected, actual, settings, base)
    finally:
        expected.close()
        actual.close()


def _walk(hop: HopSubjects, parent: CapturedGraph, child: CapturedGraph, expected: TensorReader, actual: TensorReader,
          settings: LocalizeSettings, base: dict[str, Any]) -> Localization:
    tolerance = settings.rules.for_output("", "float32")
    atol, rtol = tolerance.atol, tolerance.rtol
    results: dict[str, Measure | None] = {}
    # The graph inputs and outputs, by signature, each side in the source's layout.
    boundary = boundary_tensors(hop, parent, child)
    output_drifts = []
    for tensor, target, parent_spec, child_spec in boundary:
        e, a = expected.get(tensor), actual.get(target)
        if e is None or a is None:
            continue
        rule = settings.rules.for_output(parent_spec.source_name, parent_spec.dtype)
        found = measure(to_source_layout(e, parent_spec.perm), to_source_layout(a, child_spec.perm), rule.atol, rule.rtol,
                        target, (SAME,))
        if found is not None:
            results[tensor] = Measure(found.target, found.max_abs, found.max_rel, found.over, "signature")
    outputs = [tensor for tensor, _, spec, _ in boundary if tensor in parent.outputs
               and (settings.output is None or spec.source_name == settings.output)]
    if settings.output is not None and not outputs:
        names = ", ".join(s.source_name for s in hop.parent.signature.outputs)
        from bridge.errors import InputError

        raise InputError(f"--output {settings.output}: the model has no such output; its outputs are {names}")
    cone = ancestors(parent, outputs)
    nodes = [node for node in parent.nodes if node.name in cone]
    pairs = name_pairs(parent, child)
    inner = [t for node in nodes for t in node.outputs if t not in results]
    by_names = bool(inner) and sum(1 for t in inner if t in pairs) >= NAME_COVERAGE * len(inner)
    index: ValueIndex | None = None
    by_value = 0
    for tensor in inner:
        e = expected.get(tensor)
        if e is None:
            continue
        target = pairs.get(tensor, "") if by_names else ""
        a = actual.get(target) if target else None
        if a is not None and target:
            layouts = ("channels-last", SAME) if target in child.layouts else None
            results[tensor] = measure(e, a, atol, rtol, target, layouts) if layouts else measure(e, a, atol, rtol, target)
        else:
            # No recorded name: the closest child tensor by value. A wrong neighbour cannot blame an
            # op: a tensor that fails while one computed from it passes is not a verdict (walk.py).
            index = index or ValueIndex(child, actual)
            results[tensor] = index.closest(e, atol, rtol)
            by_value += results[tensor] is not None
        del e
    walk = Walk(parent, nodes, results)
    passed_targets = {m.target for m in results.values() if m is not None and m.over <= 1.0}
    for tensor in outputs:
        producer = walk.producers.get(tensor)
        if producer is not None:
            output_drifts.append(walk.drift(producer, child, passed_targets))
    compared = sum(1 for m in results.values() if m is not None)
    method = BY_NAMES if by_names else BY_VALUES
    notes = (*parent.notes, *child.notes)
    outputs_fail = any(walk.fails(t) or (results.get(t) is not None and results[t].over > 1.0) for t in outputs)  # type: ignore[union-attr]
    first = walk.first()
    if not outputs_fail and first is None:
        return Localization(**base, status=AGREES, method=method, first=None, top=(), outputs=tuple(output_drifts),
                            compared=compared, nodes=len(nodes), seconds=0.0, notes=notes)
    if first is None or compared <= len(boundary):
        reason = ("no intermediate tensor of the parent could be joined to the child's "
                  f"({'names' if by_names else 'values'} tried)")
        return Localization(**base, status=NOT_LOCALISED, method="", first=None, top=(), outputs=tuple(output_drifts),
                            compared=compared, nodes=len(nodes), seconds=0.0, reason=reason, notes=notes)
    top = tuple(walk.drift(node, child, passed_targets) for node in walk.top(settings.top))
    reason = (f"{by_value} tensor(s) without a recorded name joined to the closest child tensor by value" if by_names
              and by_value else "" if by_names else
              "the child keeps no names of the parent's tensors: each was joined to the closest child tensor by value")
    return Localization(**base, status=DIVERGES, method=method, first=walk.drift(first, child, passed_targets, True),
                        top=top, outputs=tuple(output_drifts), compared=compared, nodes=len(nodes), seconds=0.0,
                        reason=reason, notes=notes)


def boundary_tensors(hop: HopSubjects, parent: CapturedGraph, child: CapturedGraph) -> list[tuple[str, str, TensorSpec, TensorSpec]]:
    """(parent tensor, child tensor, parent spec, child spec) of the graph inputs and outputs, by signature."""
    pairs = []
    for kind in ("inputs", "outputs"):
        parent_specs, child_specs = getattr(hop.parent.signature, kind), getattr(hop.child.signature, kind)
        parent_names, child_names = getattr(parent, kind), getattr(child, kind)
        by_source = {s.source_name: k for k, s in enumerate(child_specs)}
        for k, spec in enumerate(parent_specs):
            j = by_source.get(spec.source_name)
            if j is None or k >= len(parent_names) or j >= len(child_names):
                continue
            pairs.append((parent_names[k], child_names[j], spec, child_specs[j]))
    return pairs


def first_divergence(localizations: tuple[Localization, ...]) -> OpDrift | None:
    return next((loc.first for loc in localizations if loc.first is not None), None)


def select_hops(subjects: Any, wanted: tuple[str, str] | None) -> list[HopSubjects]:
    """The hops of a folder (parent and child subjects), or the one `wanted` names, or an InputError listing them."""
    by_name = {s.name: s for s in subjects}
    hops = [HopSubjects(by_name[s.parent], s) for s in subjects
            if s.parent is not None and s.parent in by_name and by_name[s.parent].factory is None]
    if wanted is None:
        return hops
    chosen = [h for h in hops if (h.parent.name, h.child.name) == wanted
              or (h.parent.format.value, h.child.format.value) == wanted]
    if not chosen:
        names = ", ".join(f"{h.parent.name}->{h.child.name}" for h in hops) or "none"
        from bridge.errors import InputError

        raise InputError(f"--hop {'->'.join(wanted)}: no such hop in this folder; its hops are {names}")
    return chosen


def localize_comparisons(subjects: Any, comparisons: Any, outputs: Mapping[str, Mapping[str, NDArray[Any]]],
                         source_inputs: Mapping[str, NDArray[Any]], manifest: Manifest, folder: Path,
                         options: Any) -> tuple[Localization, ...]:
    """Localise every failing hop of a verify (or the one named), on the CPU, each on its worst sample."""
    import tempfile

    wanted = options.localize.hop_pair()
    rules = tolerance_rules_of(options)
    settings = LocalizeSettings(rules, options.localize.top, options.localize.max_steps, options.localize.bisect,
                                options.timeout, options.trust_pickle, options.trust_code, options.localize.output)
    tolerance = rules.for_output("", "float32")
    found = []
    for hop in select_hops(subjects, wanted):
        comparison = next((c for c in comparisons if c.kind == "hop" and c.src == hop.parent.name
                           and c.dst == hop.child.name and c.device == "cpu"), None)
        base: dict[str, Any] = dict(hop=hop.name, formats=hop.formats, candidate="", sample=options.localize.sample or 0,
                    output=settings.output, atol=tolerance.atol, rtol=tolerance.rtol, method="", first=None, top=(),
                    outputs=(), compared=0, nodes=0, seconds=0.0)
        if comparison is None:
            if wanted is not None:
                found.append(Localization(**base, status=NOT_LOCALISED,
                                          reason="parent or child did not run on the CPU: nothing to localise"))
            continue
        failing = [o for o in comparison.outputs if not o.passed and (settings.output is None or o.name == settings.output)]
        if not failing:
            if wanted is not None:
                found.append(Localization(**base, status=AGREES))
            continue
        sample = options.localize.sample
        if sample is None:
            sample = worst_sample(outputs[f"{hop.parent.name}@cpu"], outputs[f"{hop.child.name}@cpu"],
                                  tuple(s for s in manifest.source.signature.outputs if s.name in {o.name for o in failing}),
                                  rules)
        logger.info("localise %s on sample %d", hop.name, sample)
        with tempfile.TemporaryDirectory(prefix="bridge-localize-") as work:
            found.append(localize_hop(hop, manifest, folder, source_inputs, sample, settings, Path(work)))
    return tuple(found)
