"""The conversion matrix: every zoo model to every format its source reaches, converted and verified.

``python -m bridge.zoo.matrix [--models a,b] [--out docs/matrix.md] [--include-slow]`` exports each model
(bridge.zoo.export), converts it to every reachable format in one ``convert(..., to="all")`` call, verifies
that output directory once on CPU, and derives one `MatrixCell` per target from the manifest and
the report: the cumulative comparison source -> target, the target's CPU latency, and the reason
for a failure (the hop that failed, the representation that could not run, or the drift).
Cells that a model declares in its ``known_failures`` are marked ``known`` with the declared reason.

Hops that no default route takes (tf -> onnx, tflite -> onnx, and onnx -> tflite from JAX) are exercised by `FORCED_ROUTES`,
converted with ``via=`` for every model of the given source.

Where it diverges: a failing cell whose artifact ran is localised (bridge.localization: the first
divergent operation); so is every candidate a hop tried and rejected because it drifted, converted
again with that candidate alone (``only=``). A candidate that made nothing runnable has its error
as the stated reason.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import __version__, defaults
from bridge.errors import BridgeError
from bridge.formats import Format
from bridge.route import plan, reachable
from bridge.zoo.registry import MODELS, ZooModel, get

PASS, FAIL, KNOWN = "pass", "fail", "known"
"""Cell statuses: verified within tolerance; failed; failed as the model's known_failures declare."""
SAMPLES = 4
LATENCY_RUNS = 5
DEVICE = "cpu"
COMMAND = "python -m bridge.zoo.matrix --include-slow --out docs/matrix.md"
DEPLOYED = (Format.KERAS, Format.TFJS, Format.TF_SERVING, Format.TORCHSERVE)
"""Targets ``--to all`` leaves to be named, which the matrix makes too."""


@dataclass(frozen=True)
class ForcedRoute:
    """A route the planner never picks by itself, run for every model of `source` (``--via``)."""

    source: Format
    via: tuple[Format, ...]
    target: Format

    @property
    def chain(self) -> tuple[Format, ...]:
        return (self.source, *self.via, self.target)

    def describe(self) -> str:
        return " -> ".join(f.value for f in self.chain)


FORCED_ROUTES: tuple[ForcedRoute, ...] = (
    # keras -> onnx goes straight through tf2onnx's Keras path; these reach onnx from the
    # SavedModel and from the TFLite file, the only routes that use the tf->onnx and tflite->onnx hops.
    ForcedRoute(Format.KERAS, (Format.TF,), Format.ONNX),
    ForcedRoute(Format.KERAS, (Format.TF, Format.TFLITE), Format.ONNX),
    # A JAX model reaches TFLite through jax2tf by default; this is the other route, through jax2onnx and onnx2tf.
    ForcedRoute(Format.JAX, (Format.ONNX,), Format.TFLITE),
)


@dataclass(frozen=True)
class MatrixCell:
    """One model converted to one target format, and what verification found."""

    model: str
    source: str
    target: str
    route: str
    """``torch -> onnx -> tflite``: the hops the artifact was made through."""
    status: str
    """`PASS`, `FAIL` or `KNOWN` (a failure the model declares in known_failures)."""
    max_abs: float | None
    """Worst max abs drift over the outputs, cumulative against the source on CPU; None if not compared."""
    p50_ms: float | None
    """Median CPU latency of the target artifact in ms; None if it did not run."""
    reason: str = ""
    """Why it failed: the hop failure, the runtime error or the drift summary (empty on pass)."""
    declared: str = ""
    """The reason from the model's known_failures for this target, if one is declared."""
    forced: bool = False
    """Made through a `ForcedRoute` (``via=``) rather than the planner's default route."""
    sqnr_db: float | None = None
    """A quantized cell's worst SQNR against the source (its figure; max abs is not what decides it)."""
    top1: float | None = None
    """A quantized cell's worst top-1 agreement with the source, where the outputs are class scores."""

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass(frozen=True)
class Divergence:
    """Where a failing cell, or a candidate a hop rejected, diverges."""

    model: str
    hop: str
    """``onnx->tflite``."""
    candidate: str
    outcome: str
    """The attempt's outcome (``drift``, ``unrunnable``, ``failed``), or ``cell`` for a failing cell."""
    where: str
    """The localisation's summary line, or the stated reason it has none."""


@dataclass(frozen=True)
class ModelRun:
    """What one convert + verify of one model produced (the cells and the wall time)."""

    model: str
    cells: tuple[MatrixCell, ...]
    seconds: float
    divergences: tuple[Divergence, ...] = ()


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _status(model: ZooModel, target: Format | str, ok: bool) -> tuple[str, str]:
    known = model.known_failure(target.value if isinstance(target, Format) else target)
    declared = known.reason if known else ""
    if ok:
        return PASS, declared
    return (KNOWN if known else FAIL), declared


def _failed_cells(model: ZooModel, targets: Sequence[Format], routes: dict[Format, str], reason: str,
                  forced: bool = False) -> list[MatrixCell]:
    cells = []
    for target in targets:
        status, declared = _status(model, target, False)
        cells.append(MatrixCell(model.name, model.source, target.value, routes.get(target, ""), status,
                                None, None, reason, declared, forced))
    return cells


def _cells_from_run(model: ZooModel, conversion: object, report: object, targets: Sequence[Format],
                    forced: bool) -> list[MatrixCell]:
    """One cell per target from one Conversion and its Report (float32 artifacts, CPU)."""
    from bridge.conversion import Conversion
    from bridge.verification.report import ERROR, Report

    assert isinstance(conversion, Conversion) and isinstance(report, Report)
    failures = {f.hop: f for f in conversion.failures}
    reps = {r.name: r for r in report.representations if r.device == DEVICE}
    cumulative = {c.dst: c for c in report.cumulative if c.device == DEVICE and c.src == "source"}
    cells = []
    for target in targets:
        path = conversion.route.path_to(target)
        route = " -> ".join(f.value for f in path)
        key = target.value
        reasons: list[str] = []
        # The first failing hop on the way to the target is the cause; later ones were skipped.
        for src, dst in zip(path, path[1:], strict=False):
            failure = failures.get(f"{src.value}->{dst.value}")
            # A quantized artifact under its tolerance fails the hop too (kept=tflite-int8): that is its own cell's.
            if failure is not None and failure.kept in (None, dst.value):
                reasons.append(f"hop {failure.hop} failed: {_first_line(failure.error)}")
                break
        rep = reps.get(key)
        source_rep = reps.get("source")
        if not reasons and source_rep is not None and source_rep.status == ERROR:
            reasons.append(f"source could not run: {_first_line(source_rep.error or '')}")
        if not reasons and rep is not None and rep.status != "ok":
            reasons.append(f"{key} could not run: {_first_line(rep.error or '')}")
        comparison = cumulative.get(key)
        max_abs = None
        if comparison is not None:
            values = [o.max_abs for o in comparison.outputs if o.error is None]
            max_abs = max(values) if values else None
            if not reasons and not comparison.passed:
                reasons.append("drift over tolerance: " + "; ".join(o.describe() for o in comparison.failing))
        if not reasons and comparison is None:
            reasons.append(f"no {key} artifact was compared against the source")
        status, declared = _status(model, target, not reasons)
        p50 = rep.latency.p50 if rep is not None and rep.latency is not None else None
        cells.append(MatrixCell(model.name, model.source, key, route, status, max_abs, p50,
                                "; ".join(reasons), declared, forced))
        cells += _other_runtime_cells(model, target, route, reps, cumulative, forced)
    return cells + ([] if forced else _quantized_cells(model, conversion, reps, cumulative))


def _quantized_cells(model: ZooModel, conversion: Any, reps: dict[str, Any], cumulative: dict[str, Any]) -> list[MatrixCell]:
    """A cell per quantized artifact (``tflite-int8``), judged by its quantized tolerance against the source, and
    a failed cell per scheme asked for that made no artifact."""
    from bridge.defaults import quantized_precision
    from bridge.quantize import schemes_for

    made = {a.key: a for a in conversion.manifest.artifacts if a.precision != "float32"}
    cells = []
    for fmt in (Format.TFLITE, Format.ONNX):
        if fmt not in conversion.route.targets:
            continue
        route = " -> ".join(f.value for f in conversion.route.path_to(fmt))
        for scheme in schemes_for(fmt, model.quantize):
            key = f"{fmt.value}-{quantized_precision(scheme)}"
            rep, comparison = reps.get(key), cumulative.get(key)
            reason = "" if key in made else f"no {key} artifact was made (the {fmt.value} hop failed)"
            if not reason and (rep is None or rep.status != "ok"):
                reason = f"{key} could not run: {_first_line(rep.error or '') if rep is not None else 'not run'}"
            if not reason and comparison is None:
                reason = f"no {key} artifact was compared against the source"
            if not reason and comparison is not None and not comparison.passed:
                reason = "under the quantized tolerance: " + "; ".join(o.describe() for o in comparison.failing)
            outputs = [o for o in comparison.outputs if o.error is None] if comparison is not None else []
            sqnr = [o.sqnr_db for o in outputs if o.sqnr_db is not None]
            top1 = [o.top1_agreement for o in outputs if o.top1_agreement is not None]
            status, declared = _status(model, key, not reason)
            cells.append(MatrixCell(
                model.name, model.source, key, f"{route} ({scheme})", status,
                max(o.max_abs for o in outputs) if outputs else None,
                rep.latency.p50 if rep is not None and rep.latency is not None else None, reason, declared, False,
                min(sqnr) if sqnr else None, min(top1) if top1 else None))
    return cells


def _other_runtime_cells(model: ZooModel, target: Format, route: str, reps: dict[str, Any], cumulative: dict[str, Any],
                         forced: bool) -> list[MatrixCell]:
    """A cell for each further runtime of the target (``tfjs:node-wasm``) that is installed here."""
    cells = []
    for name, rep in reps.items():
        if not name.startswith(f"{target.value}:") or rep.status == "unavailable":
            continue
        comparison = cumulative.get(name)
        reason = "" if rep.status == "ok" else f"{name} could not run: {_first_line(rep.error or '')}"
        values = [o.max_abs for o in comparison.outputs if o.error is None] if comparison is not None else []
        if not reason and comparison is not None and not comparison.passed:
            reason = "drift over tolerance: " + "; ".join(o.describe() for o in comparison.failing)
        cell = f"{target.value} ({rep.runtime})"
        status, declared = _status(model, cell, not reason)
        p50 = rep.latency.p50 if rep.latency is not None else None
        cells.append(MatrixCell(model.name, model.source, cell, route, status,
                                max(values) if values else None, p50, reason, declared, forced))
    return cells


def source_of(model: ZooModel, exported: Path) -> str | Path:
    """What convert is given: the exported file, or for a JAX model its builder (jax2onnx traces the function)."""
    return model.builder if model.source == "jax" else exported


def run_model(model: ZooModel, work_dir: Path, targets: Sequence[Format] | None = None,
              forced_routes: Sequence[ForcedRoute] = FORCED_ROUTES, localize: bool = True) -> ModelRun:
    """Export, convert (one call for every default target, one per forced route) and verify one model."""
    from bridge.conversion import convert
    from bridge.verification.run import verify
    from bridge.zoo.export import export

    started = time.perf_counter()
    source = Format(model.source)
    # What --to all makes, and the deployment targets (a cell per runtime: TF.js on node-cpu and node-wasm).
    wanted = tuple(f for f in reachable(source) if f != source and (f.spec.in_all or f in DEPLOYED))
    if targets is not None:
        wanted = tuple(f for f in wanted if f in targets)
    default_routes = {t: " -> ".join(f.value for f in plan(source, [t]).path_to(t)) for t in wanted}
    forced = [r for r in forced_routes if r.source == source and (targets is None or r.target in targets)]
    model_dir = work_dir / model.name
    try:
        exported = export(model.name, model_dir, force=True)
    except BridgeError as exc:
        reason = f"zoo export failed: {_first_line(str(exc))}"
        failed = _failed_cells(model, wanted, default_routes, reason)
        for route in forced:
            failed += _failed_cells(model, [route.target], {route.target: route.describe()}, reason, forced=True)
        return ModelRun(model.name, tuple(failed), time.perf_counter() - started)
    example_inputs = exported.inputs_path if exported.model_path.suffix == ".pt" else None

    jobs: list[tuple[tuple[Format, ...], tuple[Format, ...], Path, bool, dict[Format, str]]] = []
    if wanted:
        jobs.append((wanted, (), model_dir / f"{model.name}.bridge", False, default_routes))
    for i, route in enumerate(forced):
        jobs.append(((route.target,), route.via, model_dir / f"{model.name}.via{i}.bridge", True,
                     {route.target: route.describe()}))
    cells: list[MatrixCell] = []
    divergences: list[Divergence] = []
    for job_targets, via, out_dir, is_forced, routes in jobs:
        try:
            quantize = ",".join(model.quantize) if model.quantize and not is_forced else None
            conversion = convert(source_of(model, exported.model_path), to=list(job_targets), via=via, out_dir=out_dir, force=True,
                                 strict=False, example_inputs=example_inputs, quantize=quantize)
        except BridgeError as exc:
            cells += _failed_cells(model, job_targets, routes, f"convert failed: {_first_line(str(exc))}", is_forced)
            continue
        try:
            report = verify(conversion, devices=(DEVICE,), samples=SAMPLES, latency_runs=LATENCY_RUNS,
                            atol=model.atol, rtol=model.rtol, quantized_layers=0)
        except BridgeError as exc:
            cells += _failed_cells(model, job_targets, routes, f"verify failed: {_first_line(str(exc))}", is_forced)
            continue
        made = _cells_from_run(model, conversion, report, job_targets, is_forced)
        cells += made
        if localize:
            divergences += _divergences(model, exported.model_path, example_inputs, conversion, made, model_dir)
    return ModelRun(model.name, tuple(cells), time.perf_counter() - started, tuple(divergences))


def _explain_lines(target: object, model: ZooModel, hop: str | None) -> list[str]:
    from bridge.localization.explain import explain_report
    from bridge.options import LocalizeOptions, VerifyOptions

    try:
        report = explain_report(target, VerifyOptions(samples=SAMPLES, atol=model.atol, rtol=model.rtol,
                                                      localize=LocalizeOptions(hop=hop)))
    except BridgeError as exc:
        return [f"not localised: {_first_line(str(exc))}"]
    return [found.summary() + "".join(f"; note: {note}" for note in found.notes[:1])
            for found in report.localization] or ["nothing diverges on the samples here"]


def _divergences(model: ZooModel, model_path: Path, example_inputs: Path | None, conversion: object,
                 cells: Sequence[MatrixCell], work: Path) -> list[Divergence]:
    """Localise the failing cells whose artifacts ran, and every candidate a hop rejected for drift."""
    from bridge.conversion import Conversion, convert

    assert isinstance(conversion, Conversion)
    found: list[Divergence] = []
    for cell in cells:
        if not cell.passed and cell.reason.startswith("drift over tolerance"):
            for line in _explain_lines(conversion, model, None):
                found.append(Divergence(model.name, cell.route, "kept", "cell", line))
    for artifact in conversion.manifest.artifacts:
        for attempt in artifact.attempts:
            if attempt.outcome in ("passed", "not applicable", "not checked"):
                continue
            hop = artifact.hop
            if attempt.outcome != "drift":
                found.append(Divergence(model.name, hop, attempt.candidate, attempt.outcome,
                                        f"no artifact that runs to localise: {attempt.message}"))
                continue
            out = work / f"{model.name}.{hop.replace('->', '-')}.{attempt.candidate}.bridge"
            try:
                alone = convert(source_of(model, model_path), to=[artifact.format], only=(attempt.candidate,), out_dir=out, force=True,
                                strict=False, example_inputs=example_inputs)
            except BridgeError as exc:
                found.append(Divergence(model.name, hop, attempt.candidate, attempt.outcome,
                                        f"not localised: converting with it alone failed: {_first_line(str(exc))}"))
                continue
            # The hop's own artifact in the new folder, and the one it was made from (the source when none).
            made = next((a for a in alone.manifest.artifacts if a.hop == hop), None)
            key = made.key if made is not None else artifact.format.value
            parent = (made or artifact).made_from.value
            parent_key = next((a.key for a in alone.manifest.artifacts if a.format.value == parent), "source")
            for line in _explain_lines(alone, model, f"{parent_key}->{key}"):
                found.append(Divergence(model.name, hop, attempt.candidate, attempt.outcome, line))
    return found


def run_matrix(models: Sequence[str | ZooModel], targets: Sequence[str | Format] | None = None, *,
               work_dir: Path | None = None, forced_routes: Sequence[ForcedRoute] = FORCED_ROUTES,
               progress: Callable[[ModelRun], None] | None = None, localize: bool = True) -> list[ModelRun]:
    """Convert and verify every model in `models` to every reachable target (or only `targets`).

    Artifacts go to `work_dir` (a temporary directory, removed afterwards, when None). With `localize`,
    failing cells and rejected candidates are localised (`ModelRun.divergences`).
    """
    wanted = None if targets is None else tuple(t if isinstance(t, Format) else Format.parse(t) for t in targets)
    resolved = [m if isinstance(m, ZooModel) else get(m) for m in models]
    runs: list[ModelRun] = []
    with tempfile.TemporaryDirectory(prefix="bridge-matrix-") as tmp:
        base = Path(work_dir) if work_dir is not None else Path(tmp)
        for model in resolved:
            result = run_model(model, base, wanted, forced_routes, localize)
            runs.append(result)
            if progress is not None:
                progress(result)
    return runs


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(cells: Sequence[MatrixCell], *, command: str = COMMAND, seconds: float | None = None,
           divergences: Sequence[Divergence] = ()) -> str:
    """The matrix as Markdown: a generated-file header, tool versions, a summary, one row per cell, and
    where failing cells and rejected candidates diverge."""
    from bridge.conversion import tool_versions
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.runtimes.registry import DEFAULT_RUNNERS

    versions = tool_versions(DEFAULT_REGISTRY, DEFAULT_RUNNERS)
    lines = [
        "# Conversion matrix",
        "",
        f"<!-- Generated by `{command}`; do not edit by hand. -->",
        "",
        f"Generated by `{command}` with bridge {__version__} and Python {sys.version.split()[0]}"
        + (f" in {seconds / 60:.1f} min" if seconds is not None else "") + ".",
        "Each model is exported from the zoo, converted to every format its source reaches (the deployment targets "
        "`keras`, `tfjs`, `tf-serving` and `torchserve` included, each run where it is deployed: a `tfjs (node-wasm)` "
        "cell is TF.js's WebAssembly backend; TF Serving's REST check needs `tensorflow_model_server`, which is not "
        "installed here, so it has no cells), and verified on CPU "
        f"with {SAMPLES} generated samples; drift is the worst max abs difference over the outputs, "
        f"cumulative against the source; latency is the median of {LATENCY_RUNS} timed runs of the target artifact.",
        "Status `known` is a failure the model declares in `known_failures` (bridge/zoo/registry.py), with its declared reason.",
        "",
        "Tool versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()) + ".",
        "",
    ]
    counts = {s: sum(1 for c in cells if c.status == s) for s in (PASS, FAIL, KNOWN)}
    lines += [f"**{len(cells)} cells: {counts[PASS]} pass, {counts[FAIL]} fail, {counts[KNOWN]} known.**", ""]
    lines += ["| model | source | target | route | status | max abs drift | SQNR dB (top-1) | p50 ms | reason |",
              "|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        drift = f"{c.max_abs:.2e}" if c.max_abs is not None else "-"
        latency = f"{c.p50_ms:.3f}" if c.p50_ms is not None else "-"
        if c.status == KNOWN:
            reason = f"known: {c.declared} (seen: {c.reason})"
        elif c.status == PASS and c.declared:
            reason = f"declared known failure did not occur: {c.declared}"
        else:
            reason = c.reason
        route = c.route + (" (via)" if c.forced else "")
        quantized = "-" if c.sqnr_db is None else f"{c.sqnr_db:.1f}" + (f" ({c.top1:.2f})" if c.top1 is not None else "")
        lines.append("| " + " | ".join(_cell_text(x) for x in (c.model, c.source, c.target, route, c.status,
                                                                  drift, quantized, latency, reason)) + " |")
    lines += ["", "## Where it diverges", "",
              "Every failing cell whose artifact ran, and every candidate a hop tried and rejected, with where it "
              "diverges (`bridge explain`, docs/localization.md): the first divergent operation in the parent's "
              "graph order, or the stated reason there is none. A rejected candidate is converted again alone "
              "(`--only`) and localised on its worst sample.", ""]
    if divergences:
        lines += ["| model | hop | candidate | outcome | where |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_cell_text(x) for x in (d.model, d.hop, d.candidate, d.outcome, d.where)) + " |"
                  for d in divergences]
    else:
        lines.append("No cell failed and no hop rejected a candidate.")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SavedMatrix:
    """What a matrix run measured (``--save-cells``), to render again without running anything."""

    command: str
    seconds: float
    cells: tuple[MatrixCell, ...]
    divergences: tuple[Divergence, ...]


def rejudged(cell: MatrixCell) -> MatrixCell:
    """`cell` with its status judged against the known failures declared now (the measurement unchanged)."""
    from dataclasses import replace

    model = next((m for m in MODELS if m.name == cell.model), None)
    if model is None:
        return cell
    ok = cell.status == PASS
    charged = _CHARGED.match(cell.reason)
    if not ok and charged and cell.max_abs is not None and cell.p50_ms is not None \
            and cell.max_abs <= (model.atol if model.atol is not None else defaults.TOLERANCES["float32"].atol):
        # A run from before the rule that a quantized artifact's failure is its own cell's (`_cells_from_run`):
        # this float cell ran, and its drift is within the absolute tolerance alone, so it passes.
        ok, cell = True, replace(cell, reason="")
    status, declared = _status(model, cell.target, ok)
    return replace(cell, status=status, declared=declared)


_CHARGED = re.compile(r"^hop \S+ failed: [a-z]+-(?:int8|int8-io|dynamic|float16): ")
"""A float cell's reason naming a quantized artifact's failure (how runs before that rule charged it)."""


def _render_saved(paths: Sequence[Path], out: Path | None) -> int:
    from bridge import records
    from bridge.staging import atomic_write_text

    runs = [records.from_json(SavedMatrix, json.loads(path.read_text(encoding="utf-8")), str(path)) for path in paths]
    first = runs[0]
    cells, divergences = list(first.cells), list(first.divergences)
    command, seconds = first.command, first.seconds
    for later in runs[1:]:
        models = {c.model for c in later.cells}
        cells = [c for c in cells if c.model not in models] + list(later.cells)
        divergences = [d for d in divergences if d.model not in models] + list(later.divergences)
        order = {m.name: i for i, m in enumerate(MODELS)}
        cells.sort(key=lambda c: order.get(c.model, len(order)))
        command += f"`, then {', '.join(sorted(models))} again with `{later.command}"
        seconds += later.seconds
    cells = [rejudged(cell) for cell in cells]
    text = render(cells, command=command, seconds=seconds, divergences=divergences)
    if out:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
    return 1 if any(c.status == FAIL for c in cells) else 0


def main(argv: list[str] | None = None) -> int:
    """Run the matrix and write the Markdown table; exit 1 when a cell fails that is not declared known."""
    parser = argparse.ArgumentParser(prog="python -m bridge.zoo.matrix", description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated zoo model names (default: every non-slow model)")
    parser.add_argument("--targets", help="comma-separated target formats (default: every reachable one)")
    parser.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    parser.add_argument("--include-slow", action="store_true", help="also run the slow (torchvision, keras.applications) models")
    parser.add_argument("--work-dir", type=Path, help="keep the exported models and artifacts here (default: a temporary directory)")
    parser.add_argument("--no-localize", action="store_true", help="do not localise failing cells and rejected candidates")
    parser.add_argument("--save-cells", type=Path, help="also write the measured cells as JSON here")
    parser.add_argument("--render-cells", type=Path, nargs="+", metavar="CELLS.json",
                        help="run nothing: render cells saved by --save-cells, each status judged again against the "
                             "known failures declared now (bridge/zoo/registry.py); a later file's models replace "
                             "the same models of an earlier one (a rerun of some models)")
    args = parser.parse_args(argv)
    if args.render_cells:
        return _render_saved(args.render_cells, args.out)
    if args.models:
        models = [get(name.strip()) for name in args.models.split(",") if name.strip()]
    else:
        models = [m for m in MODELS if args.include_slow or not m.slow]
    targets = [t for t in args.targets.split(",") if t.strip()] if args.targets else None
    command = "python -m bridge.zoo.matrix" + " ".join([""] + (argv if argv is not None else sys.argv[1:]))

    def report(run: ModelRun) -> None:
        summary = ", ".join(f"{c.target}{' (via)' if c.forced else ''}: {c.status}" for c in run.cells)
        print(f"{run.model} ({run.seconds:.0f} s): {summary}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    runs = run_matrix(models, targets, work_dir=args.work_dir, progress=report, localize=not args.no_localize)
    cells = [cell for run in runs for cell in run.cells]
    seconds = time.perf_counter() - started
    divergences = [d for run in runs for d in run.divergences]
    text = render(cells, command=command, seconds=seconds, divergences=divergences)
    if args.save_cells:
        from bridge import records
        from bridge.staging import atomic_write_text

        saved = SavedMatrix(command, seconds, tuple(cells), tuple(divergences))
        atomic_write_text(args.save_cells, json.dumps(records.to_json(saved), indent=1))
    if args.out:
        from bridge.staging import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if any(c.status == FAIL for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
