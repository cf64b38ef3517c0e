"""ONNX's own tests through bridge: which convert to each target and compute what ONNX says they should.

``python -m bridge.coverage --cells docs/coverage-cells.jsonl --out docs/coverage.md --ops-json bridge/onnx_coverage.json``
runs ONNX's backend
test runner (``onnx.backend.test.BackendTest``) with bridge as the backend of each target
(bridge.onnx_backend) over the tests that ship inside the ``onnx`` package:

- ``node``: one test per ONNX op (the shortest-named non-expanded test of each op; ``--node-cases all``
  runs all 1,255), so that each op has a measured status per target;
- ``pytorch-converted``: 82 models, most at opset 6; ``light``: 9 model-zoo architectures.

Each case is converted with checked hops, run in the target's runtime on the inputs ONNX ships,
and compared with the outputs it ships by ONNX's own rule. A case passes, fails (wrong numbers:
ONNX's assertion), errs (no artifact, or one that does not run: the first line of the message), or
is not applicable (it uses an element type the target cannot hold: bridge.onnx_check.UNREPRESENTABLE).
The same cases go through the bare converters (``onnx2tf`` to TFLite, ``onnx2torch``), called the
way their READMEs show, so the page shows what bridge's candidates and opset steps add. The
per-op statuses are also written to ``bridge/onnx_coverage.json``, which ``bridge check`` reads.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unittest
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.formats import Format

SUITES = {"node": "OnnxBackendNodeModelTest", "pytorch-converted": "OnnxBackendPyTorchConvertedModelTest",
          "light": "OnnxBackendRealModelTest"}
KINDS = {"node": "node", "pytorch-converted": "pytorch-converted", "light": "real"}
PASS, FAIL, ERROR, NOT_APPLICABLE = "pass", "fail", "error", "n/a"
TARGETS = ("tflite", "tf", "torch", "onnx2tf", "onnx2torch")
COMMAND = "python -m bridge.coverage --cells docs/coverage-cells.jsonl --out docs/coverage.md --ops-json bridge/onnx_coverage.json"


@dataclass(frozen=True)
class CaseResult:
    suite: str
    case: str
    """ONNX's test name without ``test_`` and ``_cpu`` (``AvgPool2d``, ``resnet50``, ``relu``)."""
    target: str
    """A format (``tflite``) or a bare converter (``onnx2tf``)."""
    status: str
    reason: str = ""
    seconds: float = 0.0
    op: str = ""
    """For node tests: the ONNX op the test is about."""


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith(("bridge.errors.", "AssertionError", "Mismatched"))), None)
    line = lines[at] if at is not None else (lines[-1] if lines else "")
    if at is not None and line.startswith("AssertionError"):  # numpy's message is on the lines after it
        line = " ".join(lines[at:at + 4])
    return re.sub(r"/tmp/bridge-(backend|bare)-[^ ;]*", "(temporary folder)", line)[:300]


@dataclass(frozen=True)
class _Case:
    suite: str
    name: str
    """``test_relu``."""
    model_dir: Path
    op: str = ""
    types: frozenset[str] = frozenset()
    """For node tests: the element types of the model's inputs and outputs (``NOT_A_TENSOR`` for a sequence, map...)."""


NOT_A_TENSOR = "sequence/optional/map"


def _op_of(name: str, model: Any) -> str:
    """The op a node test is about: the node whose op type, in snake case, starts its name; else the first node."""
    short = name.removeprefix("test_")
    for node in model.graph.node:
        snake = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", node.op_type).lower()
        if short.startswith((snake, node.op_type.lower())):
            return str(node.op_type)
    return str(model.graph.node[0].op_type) if model.graph.node else ""


def _types_of(model: Any) -> frozenset[str]:
    from bridge.onnx_check import dtype_name

    values = (*model.graph.input, *model.graph.output)
    return frozenset(dtype_name(v.type.tensor_type.elem_type) if v.type.HasField("tensor_type") else NOT_A_TENSOR for v in values)


def select_cases(suite: str, node_cases: str = "per-op", pattern: str | None = None) -> list[_Case]:
    """The cases of `suite` to run: for node tests, one per op (or all non-expanded ones), by name."""
    import onnx
    from onnx.backend.test.loader import load_model_tests

    found: list[_Case] = []
    for test in load_model_tests(kind=KINDS[suite]):
        if "_expanded" in test.name:
            continue
        op, types = "", frozenset[str]()
        if suite == "node":
            model = onnx.load(str(Path(test.model_dir, "model.onnx")), load_external_data=False)
            op, types = _op_of(test.name, model), _types_of(model)
        found.append(_Case(suite, test.name, Path(test.model_dir) if test.model_dir else Path(), op, types))
    cases = found
    if suite == "node" and node_cases == "per-op":
        # The op's plainest test: tensors of types every target holds where it has one, then the shortest name.
        chosen: dict[str, _Case] = {}
        for case in sorted(found, key=lambda c: (bool(_unholdable(c, "tflite")), len(c.name), c.name)):
            chosen.setdefault(case.op, case)
        cases = list(chosen.values())
    short = [c for c in cases if not pattern or re.search(pattern, c.name.removeprefix("test_"))]
    return sorted(short, key=lambda c: c.name.lower())


def _unholdable(case: _Case, target: str) -> str:
    """The element type of the case's inputs or outputs that `target` cannot hold, or empty."""
    from bridge.onnx_check import UNREPRESENTABLE

    bad = sorted(case.types & (UNREPRESENTABLE.get(target, frozenset()) | {NOT_A_TENSOR}))
    return bad[0] if bad else ""


def run_cases(target: str | Format, suites: Sequence[str], pattern: str | None = None, *, node_cases: str = "per-op",
              done: set[tuple[str, str, str]] | None = None) -> Iterator[CaseResult]:
    """Every CPU case of `suites` (optionally only names matching `pattern`) through bridge (or a bare converter) to `target`."""
    from onnx.backend.test import BackendTest

    from bridge.onnx_backend import BARE_TOOLS, backend_for, bare_backend_for

    name = target.value if isinstance(target, Format) else target
    backend = bare_backend_for(name) if name in BARE_TOOLS else backend_for(Format.parse(name))
    tests = BackendTest(backend, "bridge_coverage")
    tests.include(r".*_cpu$")
    for suite in suites:
        case_class = tests.test_cases[SUITES[suite]]
        for case in select_cases(suite, node_cases, pattern):
            short = case.name.removeprefix("test_")
            if done and (name, suite, short) in done:
                continue
            method = f"{case.name}_cpu"
            if not hasattr(case_class, method):
                continue
            unholdable = _unholdable(case, name)
            if unholdable:
                yield CaseResult(suite, short, name, NOT_APPLICABLE, f"{unholdable} tensors", 0.0, case.op)
                continue
            result = unittest.TestResult()
            started = time.perf_counter()
            case_class(method).run(result)
            seconds = round(time.perf_counter() - started, 1)
            if result.failures:
                status, reason = FAIL, _first_line(result.failures[0][1])
            elif result.errors:
                status, reason = ERROR, _first_line(result.errors[0][1])
            elif result.skipped:
                continue
            else:
                status, reason = PASS, ""
            print(f"{name} {suite}/{short}: {status} ({seconds} s) {reason[:120]}", file=sys.stderr, flush=True)
            yield CaseResult(suite, short, name, status, reason, seconds, case.op)


def op_coverage(results: Sequence[CaseResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per op and target, the node tests' counts and the first failing reason (what bridge/onnx_coverage.json holds)."""
    ops: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if not r.op:
            continue
        entry = ops.setdefault(r.op, {}).setdefault(r.target, {PASS: 0, FAIL: 0, ERROR: 0, NOT_APPLICABLE: 0, "reason": ""})
        entry[r.status] += 1
        if r.status != PASS and not entry["reason"]:
            entry["reason"] = f"{r.case}: {r.reason}"[:240]
    return {op: ops[op] for op in sorted(ops, key=str.lower)}


LABELS = {"onnx2tf": "onnx2tf alone -> tflite", "onnx2torch": "onnx2torch alone -> torch"}
BARE_OF = {"tflite": "onnx2tf", "torch": "onnx2torch"}


def _order(target: str) -> tuple[int, str]:
    return (TARGETS.index(target) if target in TARGETS else len(TARGETS), target)


def render(results: Sequence[CaseResult], *, command: str = COMMAND) -> str:
    """The coverage page: totals per target and suite, what bridge adds over the bare converters, per op, then the failures."""
    import onnx

    seconds = sum(r.seconds for r in results)
    targets = sorted({r.target for r in results}, key=_order)
    lines = ["# ONNX's own tests through bridge", "",
             f"<!-- Generated by `{command}`; do not edit by hand. -->", "",
             f"Generated by `{command}` with bridge {__version__}, onnx {onnx.__version__}; the cases took "
             f"{seconds / 60:.1f} min in all on a 2-core machine.",
             "Each test that ships inside the `onnx` package is converted to the target by bridge (checked hops, "
             "candidates, an old opset lifted first), run in the target's runtime on the inputs ONNX ships, and compared "
             "with the outputs it ships by ONNX's own rule (`onnx.backend.test.BackendTest`, bridge as the backend: "
             "bridge/onnx_backend.py). The `onnx2tf alone` and `onnx2torch alone` rows run the same cases through the "
             "bare converter called the way its README shows (inputs moved to NHWC where the TFLite model asks for it). "
             "`node`: one test per ONNX op (its shortest-named test whose tensors every target holds, where it has one; "
             "`--node-cases all` runs every one). `fail`: wrong "
             "numbers, or a wrong output type or shape; `error`: no artifact, or one that does not run; `n/a`: the test's "
             "tensors have a type the target cannot hold. `bridge check` reads the per-op results "
             "(bridge/onnx_coverage.json).", "",
             "| target | suite | cases | pass | fail | error | n/a |", "|---|---|---|---|---|---|---|"]
    suites = [s for s in SUITES if any(r.suite == s for r in results)]
    for target in targets:
        for suite in [*suites, "all"]:
            mine = [r for r in results if r.target == target and suite in ("all", r.suite)]
            if not mine:
                continue
            c = {st: sum(r.status == st for r in mine) for st in (PASS, FAIL, ERROR, NOT_APPLICABLE)}
            label = LABELS.get(target, target)
            row = f"| {label} | {suite} | {len(mine)} | {c[PASS]} | {c[FAIL]} | {c[ERROR]} | {c[NOT_APPLICABLE]} |"
            lines.append(row.replace(f"| {label} | all |", f"| **{label}** | all |"))
    by = {(r.target, r.suite, r.case): r for r in results}
    added = []
    for target, bare in BARE_OF.items():
        pairs = [(r, b) for r in results if r.target == target and (b := by.get((bare, r.suite, r.case))) is not None]
        if pairs:
            gained = sum(r.status == PASS and b.status != PASS for r, b in pairs)
            lost = sum(r.status != PASS and b.status == PASS for r, b in pairs)
            added.append(f"| {target} | {len(pairs)} | {sum(b.status == PASS for _, b in pairs)} | "
                         f"{sum(r.status == PASS for r, _ in pairs)} | {gained} | {lost} |")
    if added:
        lines += ["", "## What bridge adds to the bare converter", "",
                  "| target | cases run by both | pass, converter alone | pass, bridge | pass only through bridge | "
                  "pass only alone |", "|---|---|---|---|---|---|", *added]
    ops = op_coverage(results)
    if ops:
        lines += ["", "## Per op (node tests)", "", "| op | " + " | ".join(LABELS.get(t, t) for t in targets) + " |",
                  "|---" * (len(targets) + 1) + "|"]
        for op, per in ops.items():
            cells = []
            for t in targets:
                e = per.get(t)
                if e is None:
                    cells.append("")
                    continue
                status = FAIL if e[FAIL] else ERROR if e[ERROR] else PASS if e[PASS] else NOT_APPLICABLE
                cells.append(status if status in (PASS, NOT_APPLICABLE) else f"**{status}**")
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "## Every case that did not pass", "", "| target | suite | case | status | s | reason |",
              "|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (_order(r.target), r.suite, r.case.lower())):
        if r.status != PASS:
            reason = r.reason.replace("|", "\\|")
            lines.append(f"| {LABELS.get(r.target, r.target)} | {r.suite} | {r.case} | {r.status} | {r.seconds:.1f} | {reason} |")
    return "\n".join(lines) + "\n"


def read_cells(path: Path) -> list[CaseResult]:
    """The results kept so far (one JSON object per line); a damaged last line (a killed run) is dropped."""
    found = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                found.append(CaseResult(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated (default: {','.join(TARGETS)})")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated: {', '.join(SUITES)}")
    parser.add_argument("--node-cases", choices=("per-op", "all"), default="per-op",
                        help="node tests: one per op (default) or every non-expanded one")
    parser.add_argument("--cases", help="only cases whose name matches this regular expression")
    parser.add_argument("--cells", type=Path, help="keep each result in this JSON-lines file as it comes; a rerun skips "
                                                   "the cases it holds, and the page is rendered from all of them")
    parser.add_argument("--render", action="store_true", help="run nothing: render the page from --cells")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    parser.add_argument("--ops-json", type=Path, help="write the per-op results here (bridge check reads "
                                                      "bridge/onnx_coverage.json)")
    args = parser.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}: use {', '.join(SUITES)}")
    results = read_cells(args.cells) if args.cells else []
    done = {(r.target, r.suite, r.case) for r in results}
    if args.render and not args.cells:
        parser.error("--render needs --cells")
    for target in (t.strip() for t in args.targets.split(",") if t.strip() and not args.render):
        for result in run_cases(target, suites, args.cases, node_cases=args.node_cases, done=done):
            results.append(result)
            if args.cells:
                with args.cells.open("a", encoding="utf-8") as cells:
                    cells.write(json.dumps(asdict(result)) + "\n")
    # Results kept in --cells may come from several runs (a resumed one, one per target): the page names the documented one.
    command = COMMAND if args.cells else "python -m bridge.coverage" + " ".join([""] + (argv if argv is not None else sys.argv[1:]))
    from bridge.staging import atomic_write_text

    text = render(results, command=command)
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if args.ops_json:
        atomic_write_text(args.ops_json, json.dumps({"command": command, "bridge": __version__, "onnx": _onnx_version(),
                                                     "ops": op_coverage(results)}, indent=1) + "\n")
    return 0


def _onnx_version() -> str:
    import onnx

    return str(onnx.__version__)


if __name__ == "__main__":
    sys.exit(main())
