"""Running a route's hops as checked hops: candidates in order, each artifact checked as it is made.

For each hop the candidates (registry.HopSpec.candidates, reordered by ``--prefer``, narrowed by
``--only``) are tried in order. A candidate is kept when its artifact loads, runs and agrees with
its parent (bridge.checking); otherwise the next is tried. When none agrees, the closest is kept
and the hop is recorded as failed with the figures of every attempt; when none even ran, the hop
fails as before and its descendants are not run. A target whose direct route has no candidate
that verifies is tried once more by a longer route (another chain of hops to the same format).

Speed: checks run in child processes beside the hops that follow. A hop starts from its parent's
first candidate as soon as it is written, while the parent's check runs; if that check fails, the
work started from it is discarded and redone from the candidate that is kept. At most
`defaults.parallel_steps()` child processes run at once.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, TimeoutError
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from bridge import defaults, early, memory
from bridge.checking import (
    CheckInputs,
    Outputs,
    Ran,
    SourceRun,
    carried_runs,
    closeness,
    judge,
    make_check_inputs,
    run_subject,
    subject_for,
    tolerance_rules,
)
from bridge.errors import InputError, NotApplicableError, QuantizeError, RuntimeLoadError, UnsupportedRouteError, UserError
from bridge.formats import Format
from bridge.isolation import Prestarted, run_isolated
from bridge.manifest import FAILED, NOT_APPLICABLE, NOT_CHECKED, PASSED, Artifact, Attempt, Check, ChecksRecord, HopFailure, sha256_of
from bridge.memory import human
from bridge.messages import HopRequest, HopResponse, Produced, RunRequest, SourceCode
from bridge.options import ConvertOptions
from bridge.progress import Notifier
from bridge.progress import log as logger
from bridge.registry import Candidate, HopRegistry, HopSpec
from bridge.route import Route, plan
from bridge.runtimes.registry import RunnerRegistry
from bridge.signature import Signature
from bridge.verification.run import Subject

ATTEMPTS_DIR = ".attempts"
PREWARM_BELOW = 1 << 30
"""A source under this many bytes has each hop's child started while the hop above it runs (Pipeline._prestart)."""
LOGS_DIR = "logs"
"""Every child step's whole output, kept in the output folder (``logs/NNN-SRC-DST-CANDIDATE.log``)."""


class _ParentDidNotRun(Exception):
    """A check needs its parent's outputs, and the parent (the source) could not run."""


class Cancelled(BaseException):
    """The pipeline was cancelled (Ctrl-C, SIGTERM, an error elsewhere): start nothing more."""


def spawn[T](function: Callable[[], T]) -> Future[T]:
    """Run `function` in a thread of its own; its result or exception comes back through the future.

    A thread per task, not a pool: tasks wait on each other (a hop on its parent's check), and a
    bounded pool could fill with waiters. The child-process gate bounds the real work.
    """
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(function())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=target, daemon=True).start()
    return future


def _started(launched: Future[Prestarted]) -> Prestarted | None:
    """The warm child the launcher started, or None when it could not start one (the step then starts its own)."""
    return launched.result() if launched.exception() is None else None


@dataclass
class Node:
    """An artifact that was made (or the source), and the future of its check run."""

    format: Format
    key: str
    path: Path
    signature: Signature
    precision: str = "float32"
    ran: Future[Ran] | SourceRun | None = None
    abandoned: threading.Event = field(default_factory=threading.Event)
    """Set when its check failed: work started from it is discarded."""
    digest: Future[tuple[str, int]] | None = None
    """Its sha256 and size, hashed beside its check as soon as it is written (a 45 MB file takes a tenth of a second)."""

    def outputs(self) -> tuple[Outputs | None, ...] | None:
        return self.ran.result().outputs if self.ran is not None else None


@dataclass
class HopOutcome:
    """What one hop ended with: the artifacts kept (primary first) or a failure, and its descendants."""

    hop: HopSpec
    artifacts: list[Artifact]
    failure: HopFailure | None
    node: Node | None
    attempt_dir: Path | None
    children: list[HopOutcome] = field(default_factory=list)

    def walk(self) -> list[HopOutcome]:
        return [self, *(o for child in self.children for o in child.walk())]


@dataclass
class _Made:
    """One candidate's output before judgement."""

    candidate: Candidate
    response: HopResponse
    directory: Path
    seconds: float
    nodes: list[Node]
    log: str | None = None


class Pipeline:
    """The hops of one convert, run as checked hops into a staging directory."""

    def __init__(self, stage: Path, source_signature: Signature, options: ConvertOptions, registry: HopRegistry,
                 runners: RunnerRegistry, notify: Notifier, code: SourceCode | None = None) -> None:
        self.stage = stage
        self.code = code
        self.options = options
        self.registry = registry
        self.runners = runners
        self._signature = source_signature
        self._rules = tolerance_rules(options)
        self._failure_details: dict[str, str] = {}
        self._notify = notify
        self._gate = threading.BoundedSemaphore(defaults.parallel_steps())
        self._cancelled = threading.Event()
        self._tasks: list[Future[Any]] = []
        self._tasks_lock = threading.Lock()
        self._counter = 0
        self._counter_lock = threading.Lock()
        self.inputs: CheckInputs | None = None
        self.source_outputs: SourceRun | None = None
        self._warm: dict[str, Future[Prestarted]] = {}
        self._warm_checks: dict[Format, Future[Prestarted]] = {}
        self._warm_lock = threading.Lock()
        self._prewarm = False
        self._source: Node | None = None
        self._weights = 0
        """The source's bytes (its model and weight files): they choose the large-weight candidates."""
        # Warm children are started from this one thread, alive until the run ends: a child dies with
        # the thread that started it (PR_SET_PDEATHSIG), and a branch's thread may end first.
        self._launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-prestart")
        only = set(options.only) | ({"torchscript"} if options.torch_exporter == "torchscript" else set())
        self._only = tuple(sorted(only))
        known = {c.name for hop in registry for c in hop.candidates}
        unknown = [n for n in (*options.prefer, *self._only) if n not in known]
        if unknown:
            raise InputError(f"no hop has a candidate {unknown[0]!r}; the candidates are {', '.join(sorted(known))} "
                             "(bridge convert MODEL --to FORMAT --candidates lists them per hop)")

    # --- public ---------------------------------------------------------------------------

    @property
    def checks(self) -> ChecksRecord | None:
        return self.inputs.record if self.inputs is not None else None

    def candidates_for(self, hop: HopSpec, weights: int | None = None) -> tuple[Candidate, ...]:
        """The candidates of `hop` in the order they will be tried (``--only``, then ``--prefer``, then declared order).

        Given the source's `weights` (bytes), a ``large_weights`` candidate goes first when they reach
        ``defaults.large_weights_threshold()`` and is left out below it, unless named; with `weights`
        unknown (a listing before a factory is built) it is listed last.
        """
        only = tuple(c for c in hop.candidates if c.name in self._only)
        if only:
            return only
        preferred = tuple(c for name in self.options.prefer for c in hop.candidates if c.name == name)
        rest = [c for c in hop.candidates if c not in preferred]
        if weights is None:
            rest.sort(key=lambda c: bool(c.settings.get("large_weights")))
        elif weights >= defaults.large_weights_threshold():
            rest.sort(key=lambda c: not c.settings.get("large_weights"))
        else:
            rest = [c for c in rest if not c.settings.get("large_weights")]
        return (*preferred, *rest)

    def takes_large_path(self, hop: HopSpec, weights: int) -> bool:
        """Whether `hop` will first try its large-weight candidate, and that candidate can take these options."""
        tried = self.candidates_for(hop, weights)
        return bool(tried and tried[0].settings.get("large_weights")) and not self.options.fp16 \
            and hop.dst not in self.options.quantize_formats

    def run(self, route: Route, source_path: Path, source_signature: Signature) -> list[HopOutcome]:
        """Run every hop of `route` from the source; returns the outcome tree of each first-level hop."""
        source = Node(route.source, "source", source_path, source_signature)
        children = self._children_of(route)
        # Warm children only where memory is not the question: a big source's hops each need the room.
        self._weights = memory.weight_bytes(source_path.parent)
        self._prewarm = self.options.max_memory is None and self._weights < PREWARM_BELOW
        if self.options.check:
            self.inputs = make_check_inputs(source_signature, self.stage / ATTEMPTS_DIR, self.options.seq_len)
            subject = subject_for("source", route.source, source_path, source_signature)
            # Where memory is not the question either, the first hop from the source that loads its runtime runs it.
            carrier = self._carrier(route.source, children) if self._prewarm else None
            carried = carried_runs(subject, self.inputs, self.runners, self.options,
                                   self.stage / ATTEMPTS_DIR / "source") if carrier else None
            source.ran = SourceRun(carried, carrier, self.inputs.record,
                                   lambda: self._spawn(partial(self._run_check, subject, "check-source")))
            self.source_outputs = source.ran
        futures = [self._spawn(partial(self.branch, hop, source, children)) for hop in children(route.source)]
        self._source = source
        try:
            return [f.result() for f in futures]
        except _ParentDidNotRun:
            raise self._source_did_not_run() from None
        finally:
            self._prewarm = False
            self.close_warm()

    def close(self) -> None:
        """The conversion is over, its detours too (`detour` still needs the source's run): end the warm children,
        and a carrying child still running, which ends with the launcher's thread; its run is not replaced."""
        if self.source_outputs is not None:
            self.source_outputs.close()
        self.close_warm()
        self._launcher.shutdown()

    def _carrier(self, fmt: Format, children: Callable[[Format], list[HopSpec]]) -> str | None:
        """The first hop from `fmt` whose child imports everything the source's runtime needs (SourceRun), if any."""
        needs = {m.partition(".")[0] for m in self.runners.primary(fmt).requires}
        for hop in children(fmt):
            if needs <= {m.partition(".")[0] for m in hop.modules} and not needs & set(hop.hidden) and not hop.missing():
                return hop.name
        return None

    def detour(self, target: Format, failed: set[str], made: dict[Format, Node], existing: set[Format]) -> HopOutcome | None:
        """A longer route to `target` from an artifact that verified, avoiding the hops that failed; None if there is none."""
        usable = HopRegistry(tuple(h for h in self.registry if h.name not in failed and (h.dst == target or h.dst not in existing)))
        best: Route | None = None
        for fmt in made:
            try:
                route = plan(fmt, [target], registry=usable)
            except UnsupportedRouteError:
                continue
            if best is None or len(route.hops) < len(best.hops):
                best = route
        if best is None:
            return None
        self._event("fallback", target.value, message=f"trying the longer route {best.describe()}")
        first = best.hops[0]
        try:
            return self.branch(first, made[first.src], self._children_of(best))
        except _ParentDidNotRun:  # the direct route made nothing to check, the longer one did
            raise self._source_did_not_run() from None

    def _source_did_not_run(self) -> InputError:
        source = self._source
        ran = source.ran.result() if source is not None and source.ran is not None else None
        runtime, error = (ran.runtime, ran.error) if ran is not None else ("its runtime", "")
        where = source.path if source is not None else "the source"
        return InputError(f"{where}: the source could not run in {runtime} ({error}), so nothing made from "
                          "it can be checked; fix the model, or pass --no-check to convert unchecked")

    def _run_check(self, subject: Subject, log_name: str, warm: Prestarted | None = None) -> Ran:
        assert self.inputs is not None
        inputs = self.inputs
        log_to = self.stage / LOGS_DIR / f"{log_name}.log"
        try:
            return self._gated(partial(run_subject, subject, inputs, self.runners, self.options, log_to, warm))
        except Cancelled:
            if warm is not None:
                warm.close()
            raise

    def relative(self, path: str | None) -> str | None:
        """A log's path relative to the folder (as the manifest records it)."""
        return Path(path).relative_to(self.stage).as_posix() if path else None

    # --- one hop ------------------------------------------------------------------------------

    def branch(self, hop: HopSpec, parent: Node, children: Callable[[Format], list[HopSpec]]) -> HopOutcome:
        """Make `hop`'s artifact from `parent` (trying its candidates), then every hop below it."""
        attempts: list[Attempt] = []
        tried: list[tuple[_Made, Check | None]] = []
        started_children: list[Future[HopOutcome]] = []
        for below in children(hop.dst):
            self._prestart(below)
        self._prestart_check(hop.dst)
        for index, candidate in enumerate(self.candidates_for(hop, self._weights)):
            if parent.abandoned.is_set():
                break
            made = self._produce(hop, candidate, parent, attempts)
            if made is None:
                continue
            if not self.options.check:
                attempts.append(Attempt(candidate.name, NOT_CHECKED, seconds=round(made.seconds, 3), log=made.log))
                return self._keep(hop, made, parent, None, attempts, children,
                                  "not checked (--no-check): the first candidate that converted")
            primary = made.nodes[0]
            if index == 0:  # speculate: the hops below start from the first candidate while it is checked
                started_children = [self._spawn(partial(self.branch, h, primary, children)) for h in children(hop.dst)]
            check, attempt = self._judge(hop, made, primary, parent)
            attempts.append(replace(attempt, candidate=candidate.name, seconds=round(made.seconds + attempt.seconds, 3),
                                    log=made.log))
            tried.append((made, check))
            if attempt.outcome == PASSED:
                why = "the first candidate, verified" if index == 0 else f"verified after {index} candidate(s) did not"
                outcome = self._keep(hop, made, parent, check, attempts, children, why, started_children)
                self._discard_others(tried, made)
                return outcome
            primary.abandoned.set()
            for future in started_children:
                self.discard(future.result())
            started_children = []
            self._event("fallback", hop.name, message=f"{candidate.name}: {attempt.message}")
        return self._give_up(hop, parent, tried, attempts, children)

    def _produce(self, hop: HopSpec, candidate: Candidate, parent: Node, attempts: list[Attempt]) -> _Made | None:
        if candidate.applies_to and parent.path.suffix.lower() not in candidate.applies_to:
            attempts.append(Attempt(candidate.name, NOT_APPLICABLE, f"for {', '.join(candidate.applies_to)} files only"))
            return None
        too_big = self._beyond_budget(hop, candidate)
        if too_big:
            attempts.append(Attempt(candidate.name, NOT_APPLICABLE, too_big))
            self._event("failed", f"{hop.name} [{candidate.name}]", 0.0, too_big)
            return None
        directory = self._attempt_dir(hop, candidate)
        step = f"{hop.name} [{candidate.name}]"
        self._event("start", step)
        started = time.perf_counter()
        log_to = self.stage / LOGS_DIR / f"{directory.name}.log"
        log = self.relative(str(log_to))
        peak: list[int] = []
        source_runs = self.source_outputs.lend(hop.name) if parent.key == "source" and self.source_outputs else ()
        returned = self.source_outputs.returned if source_runs and self.source_outputs else None
        warm = self._take_warm(hop)
        if returned is not None and warm is None:
            # It goes on after its hop: started from the thread that lives as long as the run, since a child dies
            # with the thread that started it (and with it, when the run ends before the source's runs do).
            warm = self._launcher.submit(Prestarted, HopRequest.task, hop.modules, hidden=hop.hidden, hide_gpu=True,
                                         work_dir=self.stage).result()
        started_it = False

        def convert() -> HopResponse:
            nonlocal started_it
            started_it = True
            return run_isolated(
                HopRequest(hop, parent.path, parent.signature, directory, self.options, candidate, self.code, source_runs),
                stage=hop.name, timeout=self.options.timeout, hide_gpu=True, work_dir=self.stage, log_to=log_to,
                max_memory=self.options.max_memory,
                on_beat=lambda seconds, rss: self._event("running", step, seconds, human(rss)),
                peak_out=peak, warm=warm, preload=hop.modules, hidden=hop.hidden, then=returned,
            )

        try:
            try:
                response = self._gated(convert)
            finally:
                if not started_it:  # cancelled before it started
                    if warm is not None:
                        warm.close()
                    if returned is not None:
                        returned(None)
        except NotApplicableError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            attempts.append(Attempt(candidate.name, NOT_APPLICABLE, str(exc).removeprefix(f"{hop.name}: "),
                                    seconds=round(time.perf_counter() - started, 3), log=log))
            self._event("done", step, time.perf_counter() - started, "not applicable")
            return None
        except QuantizeError:
            shutil.rmtree(directory, ignore_errors=True)
            raise  # not the candidate's fault: every candidate would meet it
        except UserError as exc:  # a failed, crashed or timed-out hop, a missing extra, an artifact it refused
            shutil.rmtree(directory, ignore_errors=True)
            seconds = time.perf_counter() - started
            message = str(exc).removeprefix(f"{hop.name}: ")
            attempts.append(Attempt(candidate.name, FAILED, message.splitlines()[0][:400] if message else "",
                                    seconds=round(seconds, 3), log=log if getattr(exc, "log", None) else None))
            self._failure_details[hop.name] = getattr(exc, "detail", "")
            self._event("failed", step, seconds, message)
            return None
        seconds = time.perf_counter() - started
        self._event("done", step, seconds, f"(peak {human(peak[0])})" if peak else "")
        nodes = [Node(hop.dst, self._key(hop.dst, p.precision), p.path, p.signature, p.precision,
                      digest=spawn(partial(sha256_of, p.path))) for p in response.produced]
        return _Made(candidate, response, directory, seconds, nodes, log)

    def _beyond_budget(self, hop: HopSpec, candidate: Candidate) -> str:
        """Why `candidate` is not started, when the route was planned on `hop`'s large-weight path (convert's check
        before the first hop) and this other candidate is expected to need more memory than there is; else empty."""
        if candidate.settings.get("large_weights") or not self.takes_large_path(hop, self._weights):
            return ""
        need = memory.estimate(hop.name, self._weights)
        limit, where = memory.budget(self.options.max_memory)
        if need <= limit:
            return ""
        return f"not started: {memory.over_budget(need, self._weights, limit, where)} (the large-weight path was planned)"

    def _judge(self, hop: HopSpec, made: _Made, node: Node, parent: Node) -> tuple[Check | None, Attempt]:
        subject = subject_for(node.key, node.format, node.path, node.signature, node.precision)
        node.ran = self._spawn(partial(self._run_check, subject, f"{made.directory.name}.check-{node.key}",
                                       self._take_warm_check(node.format)))
        ran = node.ran.result()
        parent_outputs = parent.outputs()
        if parent_outputs is None:
            if parent.key == "source":
                raise _ParentDidNotRun(parent.key)
            # A speculative child of a candidate that did not run: that candidate is abandoned, and so is this.
            parent.abandoned.set()
            return None, Attempt(made.candidate.name, FAILED, "not checked: the artifact it was made from did not run")
        source = self.source_outputs.result().outputs if self.source_outputs is not None else None
        precision = defaults.combined_precision(node.precision, parent.precision)
        check, attempt = judge(node.key, parent.key, ran, parent_outputs, source, self._signature, precision, self._rules,
                               self.inputs.record if self.inputs is not None else None)
        return (replace(check, log=self.relative(ran.log)) if check is not None else None), attempt

    def _keep(self, hop: HopSpec, made: _Made, parent: Node, check: Check | None, attempts: list[Attempt],
              children: Callable[[Format], list[HopSpec]], why: str,
              started: Sequence[Future[HopOutcome]] = ()) -> HopOutcome:
        primary = made.nodes[0]
        artifacts = [self._artifact(hop, made, primary, check, attempts, why)]
        failure = None
        for extra in made.nodes[1:]:  # a second precision of the same artifact: checked, not a candidate of its own
            derived = self._produced(made, extra).derived
            from_first = derived is not None and derived.from_first  # made from the first: compared with it
            extra_check, extra_attempt = self._judge_extra(hop, made, extra, primary if from_first else parent)
            artifacts.append(self._artifact(hop, made, extra, extra_check, (), why, note=extra_attempt))
            if extra_check is not None and not extra_check.passed:
                failure = HopFailure(hop.name, f"{extra.key}: {extra_attempt}", kept=extra.key)
        futures = list(started) or [self._spawn(partial(self.branch, h, primary, children)) for h in children(hop.dst)]
        return HopOutcome(hop, artifacts, failure, primary, made.directory, [f.result() for f in futures])

    def _judge_extra(self, hop: HopSpec, made: _Made, node: Node, parent: Node) -> tuple[Check | None, str]:
        if not self.options.check:
            return None, ""
        check, attempt = self._judge(hop, made, node, parent)
        if node.ran is not None and node.ran.result().unavailable:
            return None, f"not checked here: {node.ran.result().error}"
        return check, attempt.message

    def _give_up(self, hop: HopSpec, parent: Node, tried: list[tuple[_Made, Check | None]], attempts: list[Attempt],
                 children: Callable[[Format], list[HopSpec]]) -> HopOutcome:
        runnable = [(made, check) for made, check in tried if check is not None]
        if parent.abandoned.is_set():
            self._discard_others(tried, None)
            return HopOutcome(hop, [], HopFailure(hop.name, "not kept: its parent's candidate did not verify"), None, None)
        if not runnable:
            self._discard_others(tried, None)
            real = [a for a in attempts if a.outcome != NOT_APPLICABLE]
            if real:
                last = real[-1].message
                error = last if len(real) == 1 else f"no candidate made an artifact that runs ({len(real)} tried); last: {last}"
            else:  # every candidate declined: the reason the last one gave is the one to read
                error = f"not applicable: {attempts[-1].message}" if attempts else "no candidate applies to this model"
            last_log = next((a.log for a in reversed(attempts) if a.log), None)
            return HopOutcome(hop, [], HopFailure(hop.name, error, self._failure_details.get(hop.name, ""), tuple(attempts),
                                                  log=last_log), None, None, self._not_run(hop, children))
        made, check = min(runnable, key=lambda pair: closeness(pair[1]))
        self._discard_others(tried, made)
        assert check is not None
        worst = check.worst()
        figure = f"{worst.name} max abs {worst.max_abs:.3g} (atol {worst.atol:g})" if worst and worst.max_abs is not None else "no figure"
        why = f"the closest of {len(tried)} candidate(s) that ran; none verified"
        kept = self._keep(hop, made, parent, check, attempts, children, why)
        kept.failure = HopFailure(hop.name, f"no candidate agrees with its parent; kept the closest ({made.candidate.name}): "
                                            f"{figure}", attempts=tuple(attempts), kept=kept.artifacts[0].key, log=made.log)
        return kept

    # --- helpers ------------------------------------------------------------------------------

    def _artifact(self, hop: HopSpec, made: _Made, node: Node, check: Check | None, attempts: Sequence[Attempt],
                  why: str, note: str = "") -> Artifact:
        digest, size = node.digest.result() if node.digest is not None else sha256_of(node.path)
        notes = (*made.response.notes, *((note,) if note and check is None else ()))
        produced = self._produced(made, node)
        name_map = produced.name_map.relative_to(made.directory).as_posix() if produced.name_map else None
        made_from, tool, options = hop.src, made.response.tool, made.response.options
        if produced.derived is not None:  # a quantization: its own tool; made from the first artifact, that is its parent
            made_from = hop.dst if produced.derived.from_first else hop.src
            tool, options = produced.derived.tool, produced.derived.options
        return Artifact(
            format=hop.dst, path=node.path.relative_to(made.directory).as_posix(), sha256=digest, bytes=size,
            made_from=made_from, hop=f"{made_from.value}->{hop.dst.value}", tool=tool, seconds=round(made.seconds, 3),
            options=options, inputs=node.signature.inputs, outputs=node.signature.outputs,
            precision=node.precision, candidate=made.candidate.name, kept_because=why, attempts=tuple(attempts),
            check=check, log=made.log, notes=tuple(notes), name_map=name_map,
        )

    @staticmethod
    def _produced(made: _Made, node: Node) -> Produced:
        return next(p for p in made.response.produced if p.path == node.path)

    def discard(self, outcome: HopOutcome) -> None:
        for each in outcome.walk():
            if each.attempt_dir is not None:
                shutil.rmtree(each.attempt_dir, ignore_errors=True)

    def _discard_others(self, tried: list[tuple[_Made, Check | None]], keep: _Made | None) -> None:
        for made, _ in tried:
            if made is not keep:
                shutil.rmtree(made.directory, ignore_errors=True)

    def _attempt_dir(self, hop: HopSpec, candidate: Candidate) -> Path:
        with self._counter_lock:
            self._counter += 1
            number = self._counter
        return self.stage / ATTEMPTS_DIR / f"{number:03d}-{hop.src.value}-{hop.dst.value}-{candidate.name}"

    def _prestart(self, hop: HopSpec) -> None:
        """Start `hop`'s child now, its libraries imported, so that it is ready when its parent's artifact is written."""
        with self._warm_lock:
            # One core is the hop's above it: the warm children's imports get the others.
            room = max(1, defaults.parallel_steps() - 1) - len(self._warm)
            if not self._prewarm or self._cancelled.is_set() or hop.name in self._warm or room <= 0 or hop.missing():
                return
            preload = hop.modules
            self._warm[hop.name] = self._launcher.submit(Prestarted, HopRequest.task, preload, hidden=hop.hidden,
                                                         hide_gpu=True, work_dir=self.stage)
        logger.debug("%s: its child started early, importing %s", hop.name, ", ".join(preload))

    def _take_warm(self, hop: HopSpec) -> Prestarted | None:
        with self._warm_lock:
            started = self._warm.pop(hop.name, None)
        if started is None:
            return early.take(hop)  # a first hop's, started by the CLI before this process read the model
        return _started(started)

    def _prestart_check(self, fmt: Format) -> None:
        """Start the child of the check of `fmt`'s artifact now, its runtime imported, so it is ready when the artifact is
        written. A check's imports are light and it runs at the checks' lower priority: it takes none of the hops' room."""
        if not self.options.check:
            return
        try:
            runner = self.runners.primary(fmt)
        except RuntimeLoadError:
            return
        with self._warm_lock:
            if not self._prewarm or self._cancelled.is_set() or fmt in self._warm_checks or runner.missing():
                return
            self._warm_checks[fmt] = self._launcher.submit(Prestarted, RunRequest.task, runner.modules, hidden=runner.hidden,
                                                           hide_gpu=True, nice=defaults.CHECK_NICE)
        logger.debug("check of %s: its child started early, importing %s", fmt.value, ", ".join(runner.modules))

    def _take_warm_check(self, fmt: Format) -> Prestarted | None:
        with self._warm_lock:
            started = self._warm_checks.pop(fmt, None)
        return _started(started) if started is not None else None

    def close_warm(self) -> None:
        """End the warm children that no hop or check took (a hop that failed above them, a cancelled convert)."""
        with self._warm_lock:
            unused = [*self._warm.values(), *self._warm_checks.values()]
            self._warm, self._warm_checks = {}, {}
        for started in unused:
            child = _started(started)
            if child is not None:
                child.close()

    def _gated[T](self, function: Callable[[], T]) -> T:
        if self._cancelled.is_set():
            raise Cancelled()
        with self._gate:
            if self._cancelled.is_set():
                raise Cancelled()
            return function()

    def _spawn[T](self, function: Callable[[], T]) -> Future[T]:
        future = spawn(function)
        with self._tasks_lock:
            self._tasks.append(future)
        return future

    def cancel(self, wait: float = 5.0) -> None:
        """Start nothing more, and wait (up to `wait` seconds) for the running tasks to notice.

        The caller ends the running child processes (isolation.end_all) so that the tasks waiting
        on them return at once; then nothing writes into the staging directory any more.
        """
        self._cancelled.set()
        self.close_warm()
        deadline = time.monotonic() + wait
        with self._tasks_lock:
            tasks = list(self._tasks)
        for task in tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                task.exception(timeout=remaining)
            except (TimeoutError, CancelledError):
                break

    def _event(self, kind: str, step: str, seconds: float = 0.0, message: str = "") -> None:
        self._notify(kind, step, seconds, message)

    @staticmethod
    def _key(fmt: Format, precision: str) -> str:
        return fmt.value if precision == "float32" else f"{fmt.value}-{precision}"

    @staticmethod
    def _children_of(route: Route) -> Callable[[Format], list[HopSpec]]:
        return lambda fmt: [h for h in route.hops if h.src == fmt]

    def _not_run(self, hop: HopSpec, children: Callable[[Format], list[HopSpec]]) -> list[HopOutcome]:
        """Every hop below `hop`, recorded as not run because `hop` made nothing to start from."""
        return [HopOutcome(h, [], HopFailure(h.name, f"not run: no {h.src.value} artifact to start from"), None, None,
                           self._not_run(h, children)) for h in children(hop.dst)]


def publish_attempts(stage: Path, outcomes: Sequence[HopOutcome]) -> list[Artifact]:
    """Move each kept artifact from its attempt directory to ``STAGE/FORMAT/`` and return them with final paths."""
    artifacts: list[Artifact] = []
    for outcome in (o for top in outcomes for o in top.walk()):
        if outcome.attempt_dir is None or not outcome.artifacts:
            continue
        final = stage / outcome.hop.dst.value
        shutil.rmtree(final, ignore_errors=True)
        outcome.attempt_dir.rename(final)
        artifacts.extend(replace(a, path=f"{outcome.hop.dst.value}/{a.path}",
                                 name_map=f"{outcome.hop.dst.value}/{a.name_map}" if a.name_map else None)
                         for a in outcome.artifacts)
    shutil.rmtree(stage / ATTEMPTS_DIR, ignore_errors=True)
    return artifacts


def failures_of(outcomes: Sequence[HopOutcome]) -> list[HopFailure]:
    return [o.failure for top in outcomes for o in top.walk() if o.failure is not None]
