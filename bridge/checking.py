"""Checked hops: every artifact is run in its own runtime as soon as it is written, and compared with its parent.

A check is a small verify: a few fixed samples (`defaults.CHECK_SAMPLES`), the format's reference
runtime, CPU, no latency, in a child process like every run (the source's own run in the child of
the first hop from it, when that child loads its runtime anyway: `SourceRun`). It uses verify's own pieces (feeds,
runner step, metrics, tolerances), so a check and a later ``bridge verify`` judge alike. The
outcome of one candidate is an `Attempt` (bridge.manifest); the pipeline that tries candidates
in order and keeps the first that passes is bridge.conversion.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge import defaults
from bridge import inputs as inputs_mod
from bridge.errors import BridgeError
from bridge.formats import Format
from bridge.isolation import Prestarted, read_envelope
from bridge.manifest import DRIFT, PASSED, UNRUNNABLE, Attempt, Check, CheckedOutput, ChecksRecord
from bridge.messages import RunRequest, RunResponse
from bridge.options import ConvertOptions, tolerance_rules_of
from bridge.runtimes.registry import RunnerRegistry
from bridge.signature import Signature
from bridge.verification.compare import OutputDrift, ToleranceRules
from bridge.verification.report import OK, UNAVAILABLE, Representation
from bridge.verification.run import (
    Slot,
    Subject,
    compare_outputs,
    failed_row,
    feeds_for,
    finished_row,
    not_runnable,
    run_representation,
    run_request,
)

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
                log_to: Path | None = None, warm: Prestarted | None = None) -> Ran:
    """Run `subject` on the check inputs in its format's reference runtime, on CPU, in a child process (`warm`, a
    child started for it beforehand, runs the first input set; it is closed when it is not used)."""
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
                tag=str(index), nice=defaults.CHECK_NICE, warm=warm if index == 0 else None,
                log_to=log_to.with_name(f"{log_to.stem}{_log_suffix(inputs.record, index)}.log") if log_to is not None else None,
            )
            if rep.status != OK or outputs is None:
                return _did_not_run(rep, inputs.record, index, time.perf_counter() - started)
            results.append(outputs)
    return Ran(runner.runtime, tuple(results), seconds=time.perf_counter() - started,
               log=str(log_to) if log_to is not None else None)


def _did_not_run(rep: Representation, record: ChecksRecord, index: int, seconds: float) -> Ran:
    batch = f" at {variant_label(record, index)}" if index else ""
    return Ran(rep.runtime, None, f"{rep.error or 'did not run'}{batch}", unavailable=rep.status == UNAVAILABLE,
               seconds=seconds, log=rep.log)


@dataclass(frozen=True)
class CarriedRuns:
    """A subject's check runs as requests another step's child does after its own (HopRequest.source_runs)."""

    slot: Slot
    requests: tuple[RunRequest | None, ...]
    """One per input set; None for a set the subject's fixed shape does not take."""

    def lent(self) -> tuple[RunRequest, ...]:
        return tuple(r for r in self.requests if r is not None)


def carried_runs(subject: Subject, inputs: CheckInputs, runners: RunnerRegistry, options: ConvertOptions,
                 work: Path) -> CarriedRuns | None:
    """`subject`'s check runs written as requests (their feeds in `work`); None when it cannot run here at all
    (its own run reports why)."""
    slot = Slot(subject, runners.primary(subject.format), "cpu", primary=True)
    if not_runnable(slot) is not None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    requests: list[RunRequest | None] = []
    for index, arrays in enumerate(inputs.variants):
        if index and not _fits(subject, arrays):
            requests.append(None)
            continue
        feeds_path = work / f"{subject.name}.feeds{index}.npz"
        inputs_mod.write_npz(feeds_path, feeds_for(subject, arrays))
        requests.append(run_request(slot, feeds_path, work, defaults.CHECK_SAMPLES, runs=0, warmup=0,
                                    trust_pickle=options.trust_pickle, trust_code=options.trust_code, tag=str(index)))
    return CarriedRuns(slot, tuple(requests))


def ran_from_carried(carried: CarriedRuns, record: ChecksRecord, log: str | None) -> Ran | None:
    """The subject's run from what the child that carried its requests wrote; None when it ended before it wrote them all."""
    slot = carried.slot
    stage = f"run {slot.name} on {slot.device}"
    results: list[Outputs | None] = []
    for index, request in enumerate(carried.requests):
        if request is None:
            results.append(None)
            continue
        try:
            response = read_envelope(request.carried_result, RunResponse, stage, "", log)
        except BridgeError as exc:
            return _did_not_run(failed_row(slot, exc, stage), record, index, 0.0)
        if response is None:
            return None
        rep, outputs = finished_row(slot, request, response, log=log)
        if rep.status != OK or outputs is None:
            return _did_not_run(rep, record, index, 0.0)
        results.append(outputs)
    return Ran(slot.runner.runtime, tuple(results), log=log)


class SourceRun:
    """The source's check run, which every check of a first-level artifact waits on (`result`).

    It is carried by the first hop from the source when that hop's child imports the source's
    runtime anyway (torch -> onnx and a torch source): the child runs it once the hop's result is
    written (bridge.steps.after), while the next hop already starts from that result, so torch's
    import is paid once instead of in two processes side by side, and the run is off the route's
    critical path. When no hop carries it (none can, none started, or the carrying child ended
    before it wrote the results), it runs in a child of its own, as every other check does.
    """

    def __init__(self, carried: CarriedRuns | None, carrier: str | None, record: ChecksRecord,
                 own: Callable[[], Future[Ran]]) -> None:
        self._carried, self._carrier, self._record, self._own = carried, carrier, record, own
        self._lock = threading.Lock()
        self._lent = False
        self._closed = False
        self._future: Future[Ran] | None = None
        self._settled = threading.Event()
        if carried is None or carrier is None:
            self._start_own()

    def lend(self, hop: str) -> tuple[RunRequest, ...]:
        """The requests for `hop`'s child to run after its hop, when it is the carrier and the run is still to do; else none."""
        with self._lock:
            if self._carried is None or self._lent or self._future is not None or hop != self._carrier or self._closed:
                return ()
            self._lent = True
            return self._carried.lent()

    def returned(self, log: str | None) -> None:
        """The carrying child ended: take the results it wrote; when it wrote none, the source's own run starts."""
        assert self._carried is not None
        ran = ran_from_carried(self._carried, self._record, log)
        with self._lock:
            self._lent = False
            if self._closed:
                return
            if ran is not None:
                future: Future[Ran] = Future()
                future.set_result(ran)
                self._future = future
                self._settled.set()
                return
            self._carried = None  # not lent again
        self._start_own()

    def close(self) -> None:
        """The conversion is over: a carrying child still running is not waited for, nor replaced. A check that
        would still wait for the run gets an error instead of waiting for ever."""
        with self._lock:
            self._closed = True
            if self._future is None:
                future: Future[Ran] = Future()
                future.set_exception(RuntimeError("the source's check run was asked for after the conversion ended"))
                self._future = future
                self._settled.set()

    def _start_own(self) -> None:
        with self._lock:
            if self._future is None and not self._closed:
                self._future = self._own()
                self._settled.set()

    def result(self) -> Ran:
        with self._lock:
            idle = self._future is None and not self._lent
        if idle:  # nobody carried it, and a check needs it now
            self._start_own()
        self._settled.wait()
        assert self._future is not None
        return self._future.result()


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
