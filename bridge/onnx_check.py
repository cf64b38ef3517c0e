"""Pre-flight for an ONNX model: its ops, opset and types against the measured coverage of each route.

``bridge check model.onnx --to tflite`` (and ``bridge convert model.onnx --to tflite --candidates``)
reads the model in a child process (`census`: ops by domain and count, opsets, element types; it
runs nothing) and looks each op up in `bridge/onnx_coverage.json`, which ``python -m bridge.coverage``
writes from ONNX's own node tests converted by bridge to each target (docs/coverage.md). It says,
before any conversion:

- ops of a custom domain, which no converter reads (convert refuses them: exit 2);
- the opset step convert will take (lifted from below 7, lowered from above 18);
- element types the target cannot hold (``string``, ``bfloat16`` for onnx2tf's targets...);
- per op: measured to pass, measured to fail (with the reason and the targets where the same op
  passes, the route that covers it), or not measured.

`CheckReport.exit_code` is 1 when something is known to block a target (a custom-domain op, an op
measured to fail, a type it cannot hold), else 0: unmeasured ops are listed, not judged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from bridge import defaults
from bridge.formats import Format
from bridge.messages import OnnxCensus, OnnxCensusRequest, OpUse

COVERAGE_FILE = Path(__file__).with_name("onnx_coverage.json")

UNREPRESENTABLE: dict[str, frozenset[str]] = {
    # onnx2tf has no bfloat16 (it says so and stops); TensorFlow's converters no strings or 4/8-bit floats.
    "tflite": frozenset({"string", "bfloat16", "complex64", "complex128", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2",
                         "float8e5m2fnuz", "float8e8m0", "int4", "uint4", "float4e2m1", "int2", "uint2"}),
    "tf": frozenset({"string", "bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "float8e8m0",
                     "int4", "uint4", "float4e2m1", "int2", "uint2"}),
    "torch": frozenset({"string", "float8e4m3fnuz", "float8e5m2fnuz", "float8e8m0", "int4", "uint4", "float4e2m1",
                        "int2", "uint2"}),
}
"""ONNX element types a target cannot hold, so an ONNX test that uses one is not applicable there."""
UNREPRESENTABLE["keras"] = UNREPRESENTABLE["tf"]
UNREPRESENTABLE["onnx2tf"] = UNREPRESENTABLE["tflite"]
UNREPRESENTABLE["onnx2torch"] = UNREPRESENTABLE["torch"]

PASS, FAIL, ERROR, NOT_APPLICABLE, NOT_MEASURED = "pass", "fail", "error", "n/a", "not measured"
SAME_CONVERTER = {"tf": "tflite", "keras": "tflite"}
"""Targets whose op coverage, where not measured, is read from another target made by the same converter (onnx2tf)."""


def census(request: OnnxCensusRequest) -> OnnxCensus:
    """In the child: what `request.path` holds. Loads the graph without its external weights; runs nothing."""
    import onnx

    from bridge.errors import InputError

    try:
        model = onnx.load(str(request.path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for damaged files
        raise InputError(f"{request.path}: not a readable ONNX file ({type(exc).__name__}); check the file, or export it again") from exc
    if not model.graph.node:
        raise InputError(f"{request.path}: the ONNX graph has no nodes; export it again")
    counts: dict[tuple[str, str], int] = {}

    def walk(graph: Any) -> None:
        for node in graph.node:
            key = ("" if node.domain == "ai.onnx" else node.domain, node.op_type)
            counts[key] = counts.get(key, 0) + 1
            for attr in node.attribute:
                for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                    walk(sub)

    walk(model.graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - inference is a help here, the declared types are enough
        inferred = model.graph
    types = {v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.output, *inferred.value_info)
             if v.type.HasField("tensor_type")}
    types |= {t.data_type for t in model.graph.initializer}
    from bridge.onnx_opset import default_opset

    opset = default_opset(model)
    unlowerable = []
    if opset > defaults.ONNX_OPSET:
        for domain, op in counts:
            if domain == "":
                try:
                    onnx.defs.get_schema(op, defaults.ONNX_OPSET, "")
                except onnx.defs.SchemaError:
                    unlowerable.append(op)
    return OnnxCensus(
        unlowerable=tuple(unlowerable),
        opsets={("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import},
        ops=tuple(OpUse(domain, op, n) for (domain, op), n in counts.items()),
        dtypes=tuple(sorted(dtype_name(t) for t in types if t)),
        nodes=sum(counts.values()),
        local_functions=tuple(f"{f.domain}.{f.name}" for f in model.functions),
    )


def dtype_name(elem_type: int) -> str:
    """ONNX's element type as bridge names dtypes (``float32``, ``bfloat16``, ``string``)."""
    import onnx

    name = str(onnx.TensorProto.DataType.Name(elem_type)).lower()
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(name, name)


# --- the measured coverage -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCoverage:
    """How ONNX's node tests of one op fared when converted to one target."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    not_applicable: int = 0
    reason: str = ""
    """The first failing case and what went wrong with it."""

    @property
    def status(self) -> str:
        if self.failed:
            return FAIL
        if self.errors:
            return ERROR
        if self.passed:
            return PASS
        return NOT_APPLICABLE if self.not_applicable else NOT_MEASURED


@dataclass(frozen=True)
class Coverage:
    """`ops[op][target]`, as generated by ``python -m bridge.coverage`` (docs/coverage.md)."""

    ops: dict[str, dict[str, OpCoverage]]
    command: str = ""
    onnx: str = ""

    def of(self, op: str, target: str) -> OpCoverage:
        return self.ops.get(op, {}).get(target, OpCoverage())

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted({t for per in self.ops.values() for t in per}))


@cache
def load_coverage(path: Path = COVERAGE_FILE) -> Coverage:
    """bridge's own measured coverage (package data); an empty one when it has not been generated."""
    if not path.is_file():
        return Coverage({})
    raw = json.loads(path.read_text(encoding="utf-8"))
    ops = {op: {target: OpCoverage(int(c.get("pass", 0)), int(c.get("fail", 0)), int(c.get("error", 0)),
                                   int(c.get("n/a", 0)), str(c.get("reason", "")))
                for target, c in per.items()}
           for op, per in raw.get("ops", {}).items()}
    return Coverage(ops, str(raw.get("command", "")), str(raw.get("onnx", "")))


# --- the check -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCheck:
    op: str
    domain: str
    count: int
    status: str
    """pass / fail / error / n/a / not measured / custom domain."""
    reason: str = ""
    covered_by: tuple[str, ...] = ()
    """Other targets where ONNX's tests of this op pass (the routes that cover it)."""

    @property
    def blocks(self) -> bool:
        return self.status in (FAIL, ERROR, "custom domain")


@dataclass(frozen=True)
class TargetCheck:
    target: Format
    route: str
    """``onnx -> tf -> tfjs``."""
    measured_as: str
    """The coverage the ops are judged by: the first hop out of ONNX (``tf`` for tfjs)."""
    ops: tuple[OpCheck, ...]
    unholdable: tuple[str, ...] = ()
    """Element types of the model that this target cannot hold."""

    @property
    def blocked(self) -> bool:
        return bool(self.unholdable) or any(o.blocks for o in self.ops)


@dataclass(frozen=True)
class CheckReport:
    model: str
    census: OnnxCensus
    opset_step: str
    """What convert will do to the opset first, or empty."""
    targets: tuple[TargetCheck, ...]
    coverage_command: str = ""

    @property
    def passed(self) -> bool:
        return not any(t.blocked for t in self.targets)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


def check(model: str | Path, to: str | Format | Sequence[str | Format], *, coverage: Coverage | None = None) -> CheckReport:
    """What `model` (an ONNX file) holds against the measured coverage of the route to each target in `to`."""
    from bridge.errors import InputError
    from bridge.isolation import run_isolated
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.route import parse_targets, plan

    path = Path(model)
    if not path.is_file():
        raise InputError(f"{path}: no such file; bridge check reads an ONNX file (.onnx)")
    from bridge.formats import detect

    if detect(path) != Format.ONNX:
        raise InputError(f"{path}: bridge check reads ONNX files; convert it to ONNX first (bridge convert {path} --to onnx)")
    coverage = coverage or load_coverage()
    found = run_isolated(OnnxCensusRequest(path), stage="check", hide_gpu=True)
    opset = found.opsets.get("", 0)
    if 0 < opset < defaults.MIN_SOURCE_OPSET:
        step = f"opset {opset} is lifted to {defaults.ONNX_OPSET} first (onnx.version_converter, checked)"
    elif opset > defaults.ONNX_OPSET:
        step = (f"opset {opset} is kept: {', '.join(found.unlowerable)} has no opset-{defaults.ONNX_OPSET} form "
                f"(onnx2tf reads it; onnx2torch stops at opset {defaults.ONNX2TORCH_MAX_OPSET})" if found.unlowerable else
                f"opset {opset} is lowered to {defaults.ONNX_OPSET} first (onnx.version_converter, checked)")
    else:
        step = ""
    results = []
    for target in parse_targets(to, Format.ONNX, DEFAULT_REGISTRY):
        route = plan(Format.ONNX, (target,))
        measured = route.hops[0].dst.value if route.hops else target.value
        unholdable = tuple(t for t in found.dtypes if t in UNREPRESENTABLE.get(measured, frozenset()))
        ops = tuple(_op_check(use, measured, coverage) for use in found.ops)
        results.append(TargetCheck(target, " -> ".join(f.value for f in route.formats), measured, ops, unholdable))
    return CheckReport(str(path), found, step, tuple(results), coverage.command)


def _op_check(use: OpUse, measured: str, coverage: Coverage) -> OpCheck:
    from bridge.onnx_opset import STANDARD_DOMAINS

    if use.domain not in STANDARD_DOMAINS:
        return OpCheck(use.op_type, use.domain, use.count, "custom domain",
                       f"domain {use.domain!r} is not ONNX's: no converter reads it")
    mine = coverage.of(use.op_type, measured)
    if mine.status == NOT_MEASURED and measured in SAME_CONVERTER:
        # onnx2tf makes both: where the op was not run to this target, its TFLite result is the nearest measure.
        near = coverage.of(use.op_type, SAME_CONVERTER[measured])
        if near.status != NOT_MEASURED:
            mine = replace(near, reason=f"measured to {SAME_CONVERTER[measured]} (the same converter)"
                                        + (f": {near.reason}" if near.reason else ""))
    covered_by: tuple[str, ...] = ()
    if mine.status in (FAIL, ERROR):
        covered_by = tuple(t for t in ("tflite", "tf", "torch", "keras") if t != measured
                           and coverage.of(use.op_type, t).status == PASS)
    return OpCheck(use.op_type, use.domain, use.count, mine.status, mine.reason, covered_by)


def render_text(report: CheckReport) -> list[str]:
    """The terminal lines of `bridge check`: the model, then per target the ops that need attention."""
    c = report.census
    lines = [f"{report.model}: opset {c.opsets.get('', '?')}, {c.nodes} nodes, {len(c.ops)} op types; "
             f"types {', '.join(c.dtypes) or 'none declared'}"]
    if report.opset_step:
        lines.append(f"  first: {report.opset_step}")
    for t in report.targets:
        counts: dict[str, int] = {}
        for o in t.ops:
            counts[o.status] = counts.get(o.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"{t.target.value} ({t.route}; op coverage measured to {t.measured_as}): {summary}")
        for dtype in t.unholdable:
            lines.append(f"  BLOCKS  type {dtype}: {t.measured_as} cannot hold it")
        for o in t.ops:
            if o.status == PASS:
                continue
            mark = "BLOCKS " if o.blocks else "       "
            where = f"; passes to {', '.join(o.covered_by)} (--to {o.covered_by[0]})" if o.covered_by else ""
            name = f"{o.domain}.{o.op}" if o.domain else o.op
            reason = f": {o.reason}" if o.reason else ""
            lines.append(f"  {mark} {name} x{o.count}  {o.status}{reason}{where}")
        lines.append(f"  {'something is known to block this target' if t.blocked else 'nothing known to block this target'}")
    if not report.coverage_command:
        lines.append("no measured coverage is installed: generate it with python -m bridge.coverage (docs/coverage.md)")
    return lines


__all__ = ["CheckReport", "Coverage", "OpCheck", "OpCoverage", "TargetCheck", "census", "check", "load_coverage", "render_text"]
