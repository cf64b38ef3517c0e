"""Checked hops: every artifact is run in its own runtime as soon as it is written, and compared with its parent.

A check is a small verify: a few fixed samples (`defaults.CHECK_SAMPLES`), the format's reference
runtime, CPU, no latency, in a child process like every run. It uses verify's own pieces (feeds,
runner step, metrics, tolerances), so a check and a later ``bridge verify`` judge alike. The
outcome of one candidate is an `Attempt` (bridge.manifest); the pipeline that tries candidates
in order and keeps the first that passes is bridge.conversion.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge import defaults
from bridge import inputs as inputs_mod
from bridge.formats import Format
from bridge.manifest import DRIFT, PASSED, UNRUNNABLE, Attempt, Check, CheckedOutput, ChecksRecord
from bridge.options import ConvertOptions, tolerance_rules_of
from bridge.runtimes.registry import RunnerRegistry
from bridge.signature import Signature
from bridge.verification.compare import OutputDrift, ToleranceRules
from bridge.verification.report import OK, UNAVAILABLE
from bridge.verification.run import Slot, Subject, compare_outputs, feeds_for, run_representation

Outputs = dict[str, NDArray[Any]]


@dataclass(frozen=True)
class CheckInputs:
    """The fixed inputs of every check in one convert, in the source's names and layout, ``[samples, *shape]``.

    One set per batch size: batch 1, and batch 2 as well when the source's batch is symbolic, so
    an artifact that claims a dynamic batch is shown to run at two sizes (an artifact whose batch
    is fixed runs the first set only).
    """

    variants: tuple[dict[str, NDArray[Any]], ...]
    record: ChecksRecord


def make_check_inputs(signature: Signature, work: Path, length: int | None = None) -> CheckInputs:
    """Generate the check inputs (seeded, integers 0 or 1) and note their sha256.

    With a symbolic sequence axis (`length`, the example's), the sets run at that length, and one
    more at batch 1 and a shorter length shows the axis really is dynamic where an artifact keeps it so.
    """
    if not any(not isinstance(d, int) for s in signature.inputs for d in s.shape[1:]):
        length = None  # no symbolic axis after the batch: a given length is already in the shapes
    sizes = [(1, length)] + ([(2, length)] if any(s.dynamic_batch for s in signature.inputs) else [])
    if length is not None and max(2, length // 2) != length:
        sizes.append((1, max(2, length // 2)))
    variants = tuple(inputs_mod.generate(signature, seed=defaults.CHECK_SEED, samples=defaults.CHECK_SAMPLES,
                                         int_high=defaults.CHECK_INT_HIGH, batch=b, length=n) for b, n in sizes)
    digest = inputs_mod.save_npz({f"{k}@{_label(b, n, length is not None).replace(' ', '')}": v
                                  for (b, n), arrays in zip(sizes, variants, strict=True) for k, v in arrays.items()},
                                 work / "check_inputs.npz")
    record = ChecksRecord(defaults.CHECK_SEED, defaults.CHECK_SAMPLES, digest, tuple(b for b, _ in sizes),
                          tuple(n for _, n in sizes) if length is not None else ())
    return CheckInputs(variants, record)


def _label(batch: int, length: int | None, with_length: bool) -> str:
    return f"batch {batch}" + (f" length {length}" if with_length else "")


def variant_label(record: ChecksRecord, index: int) -> str:
    """How input set `index` is named in messages and logs: ``batch 2``, ``batch 1 length 8``."""
    length = record.lengths[index] if index < len(record.lengths) else None
    return _label(record.batches[index], length, bool(record.lengths))


def _log_suffix(record: ChecksRecord, index: int) -> str:
    return "" if index == 0 else "." + variant_label(record, index).replace(" ", "")


def _fits(subject: Subject, arrays: dict[str, NDArray[Any]]) -> bool:
    """Whether every fixed dimension of the subject's inputs matches the set (an artifact that froze an axis does not)."""
    feeds = feeds_for(subject, arrays)
    for spec in subject.signature.inputs:
        shape = feeds[spec.name].shape[1:] if spec.name in feeds else None
        if shape is None or len(shape) != len(spec.shape):
            return False
        if any(isinstance(d, int) and d > 0 and d != s for d, s in zip(spec.shape, shape, strict=True)):
            return False
    return True


@dataclass(frozen=True)
class Ran:
    """One subject run on the check inputs (each batch size): its outputs, or why it did not run."""

    runtime: str
    outputs: tuple[Outputs | None, ...] | None
    """One per input set; None for a set the subject's fixed shape does not take."""
    error: str | None = None
    unavailable: bool = False
    """It could not run on this machine at all (a float16-compute TFLite on CPU): not a verdict on the file."""
    seconds: float = 0.0
    log: str | None = None
    """The runtime's whole output (its first batch size), when kept."""


def run_subject(subject: Subject, inputs: CheckInputs, runners: RunnerRegistry, options: ConvertOptions,
                log_to: Path | None = None) -> Ran:
    """Run `subject` on the check inputs in its format's reference runtime, on CPU, in a child process."""
    started = time.perf_counter()
    runner = runners.primary(subject.format)
    results: list[Outputs | None] = []
    with tempfile.TemporaryDirectory(prefix="bridge-check-") as tmp:
        for index, arrays in enumerate(inputs.variants):
            if index and not _fits(subject, arrays):  # a fixed batch or length runs the first set only
                results.append(None)
                continue
            feeds_path = Path(tmp, f"feeds{index}.npz")
            inputs_mod.write_npz(feeds_path, feeds_for(subject, arrays))
            rep, outputs = run_representation(
                Slot(subject, runner, "cpu", primary=True), feeds_path, Path(tmp), defaults.CHECK_SAMPLES,
                runs=0, warmup=0, timeout=options.timeout, trust_pickle=options.trust_pickle, trust_code=options.trust_code,
                tag=str(index), nice=defaults.CHECK_NICE,
                log_to=log_to.with_name(f"{log_to.stem}{_log_suffix(inputs.record, index)}.log") if log_to is not None else None,
            )
            if rep.status != OK or outputs is None:
                batch = f" at {variant_label(inputs.record, index)}" if index else ""
                return Ran(runner.runtime, None, f"{rep.error or 'did not run'}{batch}",
                           unavailable=rep.status == UNAVAILABLE, seconds=time.perf_counter() - started, log=rep.log)
            results.append(outputs)
    return Ran(runner.runtime, tuple(results), seconds=time.perf_counter() - started,
               log=str(log_to) if log_to is not None else None)


def tolerance_rules(options: ConvertOptions) -> ToleranceRules:
    return tolerance_rules_of(options)


def judge(name: str, parent: str, ran: Ran, parent_outputs: tuple[Outputs | None, ...],
          source_outputs: tuple[Outputs | None, ...] | None, source: Signature, precision: str, rules: ToleranceRules,
          record: ChecksRecord | None = None) -> tuple[Check | None, Attempt]:
    """The check record and the attempt's outcome for one artifact that was run (or could not be)."""
    if ran.outputs is None:
        return None, Attempt("", UNRUNNABLE, f"{name} would not run in {ran.runtime}: {_first_line(ran.error or '')}",
                             seconds=ran.seconds)
    drifts: list[OutputDrift] = []
    against_source: list[OutputDrift] = []
    for index, (mine, theirs) in enumerate(zip(ran.outputs, parent_outputs, strict=False)):
        if mine is None or theirs is None:  # a set one of them does not take (a fixed batch or length)
            continue
        found = compare_outputs(parent, name, theirs, mine, source, rules, precision, same_nonfinite_agrees=True)
        label = variant_label(record, index) if record is not None and index else ""
        drifts.extend(replace(d, name=f"{d.name} ({label})") if label else d for d in found)
        at_source = source_outputs[index] if source_outputs is not None and index < len(source_outputs) else None
        if at_source is not None:
            against_source.extend(compare_outputs("source", name, at_source, mine, source, rules, precision,
                                                  same_nonfinite_agrees=True))
    checked = tuple(_checked(d) for d in drifts)
    cumulative = None
    if source_outputs is not None:
        finite = [d.max_abs for d in against_source if d.error is None and np.isfinite(d.max_abs)]
        cumulative = float(f"{max(finite):.6g}") if finite else None
    check = Check(all(d.passed for d in drifts), ran.runtime, checked, cumulative, round(ran.seconds, 3))
    worst = check.worst()
    if check.passed:
        figure = f"max abs {worst.max_abs:.2g}" if worst is not None and worst.max_abs is not None else "agrees"
        return check, Attempt("", PASSED, figure, worst.max_abs if worst else None, worst.name if worst else None,
                              ran.seconds)
    failing = next(d for d in drifts if not d.passed)
    return check, Attempt("", DRIFT, f"{name} differs from {parent}: {failing.describe()}",
                          None if failing.error else float(f"{failing.max_abs:.6g}"), failing.name, ran.seconds)


def _checked(drift: OutputDrift) -> CheckedOutput:
    value = None if drift.error is not None or not np.isfinite(drift.max_abs) else float(f"{drift.max_abs:.6g}")
    return CheckedOutput(drift.name, value, drift.tolerance.atol, drift.tolerance.rtol, drift.passed,
                         drift.error or drift.nonfinite)


def closeness(check: Check | None) -> float:
    """How far an artifact is from passing (lower is closer): the worst max abs over its atol; inf if it did not run."""
    if check is None:
        return float("inf")
    worst = check.worst()
    if worst is None or worst.max_abs is None:
        return float("inf")
    return worst.max_abs / max(worst.atol, 1e-30)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else "(no message)"


def subject_for(name: str, fmt: Format, path: Path, signature: Signature, precision: str = "float32") -> Subject:
    """A check's subject: one file, run from where it was written."""
    return Subject(name, fmt, path, signature, None, precision, "")
