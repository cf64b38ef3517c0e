"""`bridge batch`: a plan of models x targets, each verified as one job, on a pool or a Ray cluster.

A plan is a YAML or JSON file (bridge.batch_plan reads it as untrusted input), a directory of
models, or the zoo. Each job is ``bridge verify MODEL --to TARGETS`` in a process of its own, so a
job that crashes, hangs or is killed is that job's error and the others go on; its output folder,
report and log are ``OUT/models/NAME``, ``OUT/jobs/NAME/report.json`` and ``OUT/jobs/NAME/output.log``.

A job is done when ``OUT/jobs/NAME/job.json`` holds its key: the sha256 of the model's bytes, its
targets and flags, its inputs file, bridge's version and code, and the tools' versions. Running the plan again skips
every done job whose key is unchanged and whose output is whole; a job that ended in an error is
always run again. The executors (bridge.executors) run jobs; this module makes and reads them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.errors import EXIT_DRIFT, EXIT_OK, EXIT_USER_ERROR, InputError
from bridge.progress import log

JOB_RECORD = "job.json"
JOB_SCHEMA = "bridge.batch-job/1"
MAX_RECORD_BYTES = 1 << 20
VERIFIED, DRIFT, ERROR = "verified", "drift", "error"


@dataclass(frozen=True)
class Job:
    """One model to its targets: what ``bridge verify MODEL --to TARGETS`` is run with."""

    name: str
    """Unique in the plan; the name of its output folder."""
    model: str
    """An absolute path, or a zoo name when `zoo` is set."""
    targets: tuple[str, ...]
    flags: tuple[str, ...] = ()
    """Convert and verify flags, already checked (bridge.batch_plan)."""
    inputs: str | None = None
    """An ``.npz`` of inputs for verify (``--inputs``)."""
    timeout: float | None = None
    """Seconds the whole job may take; then it is stopped and is an error."""
    zoo: bool = False
    """`model` is a zoo name: the job exports it first (into ``OUT/zoo``)."""

    def key(self, versions: dict[str, str]) -> str:
        """The sha256 of everything that decides this job's result."""
        digest = hashlib.sha256()
        if self.zoo:
            digest.update(f"zoo:{self.model}\n".encode())
        else:
            digest.update(_content_digest(Path(self.model)).encode())
        if self.inputs:
            digest.update(_content_digest(Path(self.inputs)).encode())
        from bridge.cache import code_digest

        digest.update(json.dumps({"targets": self.targets, "flags": self.flags, "bridge": __version__,
                                  "code": code_digest(), "tools": dict(sorted(versions.items()))},
                                 sort_keys=True).encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class HopLine:
    """One comparison of a job's report, as the batch report lists it."""

    src: str
    dst: str
    device: str
    passed: bool
    max_abs: float | None

    def to_json(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "device": self.device, "passed": self.passed, "max_abs": self.max_abs}


@dataclass(frozen=True)
class JobResult:
    """How one job ended."""

    name: str
    model: str
    targets: tuple[str, ...]
    status: str
    """``verified``, ``drift`` or ``error``."""
    exit_code: int
    seconds: float
    message: str = ""
    """One line: the drift summary or the error."""
    hops: tuple[HopLine, ...] = ()
    out_dir: str = ""
    report: str | None = None
    log: str | None = None
    key: str = ""
    reused: bool = False
    """Done by an earlier run with the same key: not run again."""
    worker: str = ""
    """Where it ran: ``pool`` or the Ray node."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "targets": list(self.targets), "status": self.status,
                "exit_code": self.exit_code, "seconds": round(self.seconds, 2), "message": self.message,
                "hops": [h.to_json() for h in self.hops], "out_dir": self.out_dir, "report": self.report,
                "log": self.log, "key": self.key, "reused": self.reused, "worker": self.worker}


@dataclass(frozen=True)
class BatchReport:
    """Every job of a plan; ``exit_code`` is 2 when any job erred, else 1 when any drifted, else 0."""

    plan: str
    out_dir: str
    executor: str
    results: tuple[JobResult, ...]
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        return EXIT_USER_ERROR if ERROR in statuses else EXIT_DRIFT if DRIFT in statuses else EXIT_OK

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    def __bool__(self) -> bool:
        return self.passed

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in (VERIFIED, DRIFT, ERROR)}

    def to_json(self) -> dict[str, Any]:
        return {"schema": "bridge.batch-report/1", "bridge_version": __version__, "plan": self.plan,
                "out_dir": self.out_dir, "executor": self.executor, "passed": self.passed, "exit_code": self.exit_code,
                "counts": self.counts(), "seconds": round(self.seconds, 2), "notes": list(self.notes),
                "jobs": [r.to_json() for r in self.results]}

    def render(self, kind: str) -> str:
        """``json``, ``junit`` or ``markdown`` (bridge.batch_report)."""
        from bridge.batch_report import render

        return render(self, kind)


# --- one job, in whatever process the executor gives it ------------------------------------------------


def job_command(job: Job, model: str, out_root: Path, python: str = sys.executable) -> list[str]:
    """The ``bridge verify`` command line of `job`, on `model` (the exported file when the job is a zoo name)."""
    command = [python, "-m", "bridge", "verify", model, "--to", ",".join(job.targets),
               "-o", str(out_root / "models" / job.name), "--force", "--quiet",
               "--json", str(out_root / "jobs" / job.name / "report.json")]
    if job.inputs:
        command += ["--inputs", job.inputs]
    return [*command, *job.flags]


def run_job(job: Job, out_root: Path, key: str, *, steps: int | None = None, worker: str = "pool") -> JobResult:
    """Run `job` as child processes of its own and read how it ended. Never raises for the job's own failure."""
    started = time.monotonic()
    job_dir = out_root / "jobs" / job.name
    job_dir.mkdir(parents=True, exist_ok=True)
    report_path, log_path = job_dir / "report.json", job_dir / "output.log"
    report_path.unlink(missing_ok=True)
    (job_dir / JOB_RECORD).unlink(missing_ok=True)  # not done until this run says so
    env = {**os.environ, **({"BRIDGE_PARALLEL_STEPS": str(steps)} if steps else {})}
    deadline = None if job.timeout is None else started + job.timeout
    with log_path.open("w") as out:
        code, ended, model = 0, "", job.model
        builder = _zoo_builder(job.model) if job.zoo else None
        if builder is not None:  # a JAX model: its builder, as the matrix does (jax2onnx traces it)
            model = builder
        elif job.zoo:
            export_dir = out_root / "zoo" / job.name
            code, ended = _run_logged([sys.executable, "-m", "bridge", "zoo", "export", job.model, "-o", str(export_dir),
                                       "--force", "--quiet"], out, env, deadline)
            made = sorted(p for p in export_dir.iterdir() if not p.name.endswith(".npz")) if export_dir.is_dir() else []
            if code == 0 and len(made) != 1:
                code, ended = EXIT_USER_ERROR, f"the zoo export of {job.model} wrote {len(made)} models into {export_dir}"
            model = str(made[0]) if made else model
        if code == 0 and not ended:
            code, ended = _run_logged(job_command(job, model, out_root), out, env, deadline)
    seconds = time.monotonic() - started
    result = _read_outcome(job, out_root, code, ended, seconds, log_path, report_path)
    result = replace(result, key=key, worker=worker)
    if result.status != ERROR:  # done: a rerun with the same key skips it
        (job_dir / JOB_RECORD).write_text(json.dumps({"schema": JOB_SCHEMA, **result.to_json()}, indent=1) + "\n")
    return result


_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()
_stopping = threading.Event()


def stop_all() -> None:
    """End every job process this process started (Ctrl-C, SIGTERM): each runs in a session of its own."""
    with _live_lock:
        _stopping.set()
        running = list(_live)
    for proc in running:
        _kill_group(proc)


def _zoo_builder(name: str) -> str | None:
    """The builder reference of a JAX zoo model (bridge's own code, named by its zoo); None for the others."""
    from bridge.zoo.registry import get

    model = get(name)
    return model.builder if model.source == "jax" else None


def _run_logged(command: list[str], out: Any, env: dict[str, str], deadline: float | None) -> tuple[int, str]:
    """Run `command` in a process group of its own, its output into `out`; (exit code, how it ended if abnormally)."""
    out.write(f"$ {' '.join(command)}\n")
    out.flush()
    with _live_lock:
        if _stopping.is_set():
            return EXIT_USER_ERROR, "not started: the plan was stopped"
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _live.add(proc)
    try:
        code = proc.wait(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return -signal.SIGKILL, "timed out: stopped after the plan's timeout for this job"
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        with _live_lock:
            _live.discard(proc)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return code, f"crashed: its process ended by {name}"
    return code, ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _read_outcome(job: Job, out_root: Path, code: int, ended: str, seconds: float, log_path: Path,
                  report_path: Path) -> JobResult:
    from bridge.verification.report import Report

    base = JobResult(job.name, job.model, job.targets, ERROR, code if code >= 0 else EXIT_USER_ERROR, seconds,
                     out_dir=str(out_root / "models" / job.name), log=str(log_path))
    if ended:
        return replace(base, message=ended)
    report = None
    if report_path.is_file():
        try:
            report = Report.read(report_path)
        except InputError as exc:
            return replace(base, message=f"its report could not be read: {exc}")
    if report is None:  # convert stopped before verify: a hop with no artifact (2), or none that agreed (1: drift)
        return replace(base, status=DRIFT if code == EXIT_DRIFT else ERROR,
                       message=_last_error(log_path) or f"ended with exit code {code} and wrote no report")
    direct = {(c.src, c.dst, c.device) for c in report.hops}  # a cumulative comparison that is a hop is listed once
    hops = tuple(HopLine(c.src, c.dst, c.device, c.passed, max((o.max_abs for o in c.outputs), default=None))
                 for c in (*report.hops, *(c for c in report.cumulative if (c.src, c.dst, c.device) not in direct)))
    status = VERIFIED if report.exit_code == EXIT_OK else DRIFT if report.exit_code == EXIT_DRIFT else ERROR
    message = "" if status == VERIFIED else report.summary().splitlines()[0][:300]
    return replace(base, status=status, exit_code=report.exit_code, hops=hops, report=str(report_path), message=message)


def _last_error(log_path: Path) -> str:
    """The last ``bridge: ...`` line of a job's output: the CLI's one-line error."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.startswith("bridge:")]
    return lines[-1].removeprefix("bridge: ").removeprefix("error: ")[:400] if lines else ""


# --- resuming ----------------------------------------------------------------------------------------


def reusable(job: Job, out_root: Path, key: str) -> JobResult | None:
    """The earlier result of `job`, when it is done with this `key` and its output is whole; else None."""
    record = out_root / "jobs" / job.name / JOB_RECORD
    if not record.is_file() or record.stat().st_size > MAX_RECORD_BYTES:
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("schema") != JOB_SCHEMA or data.get("key") != key:
        return None
    if not (out_root / "models" / job.name / "manifest.json").is_file():
        return None
    report = out_root / "jobs" / job.name / "report.json"
    if not report.is_file():
        return None
    result = _read_outcome(job, out_root, 0, "", float(data.get("seconds", 0) or 0), record.with_name("output.log"), report)
    return replace(result, key=key, reused=True, worker=str(data.get("worker", ""))[:80]) if result.status != ERROR else None


def _content_digest(path: Path) -> str:
    from bridge.manifest import sha256_of

    return sha256_of(path)[0] if path.exists() else f"missing:{path}"


# --- the plan, run -----------------------------------------------------------------------------------


def run_batch(jobs: Sequence[Job], out_root: Path, executor: Any, *, plan: str = "",
              progress: Callable[[str], None] | None = None, rerun: bool = False) -> BatchReport:
    """Run `jobs` on `executor` (bridge.executors), skipping those done before with the same key, and report."""
    from bridge.batch_report import write_all
    from bridge.conversion import tool_versions
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.runtimes.registry import DEFAULT_RUNNERS

    started = time.monotonic()
    say = progress or (lambda line: log.info(line))
    (out_root / "models").mkdir(parents=True, exist_ok=True)
    versions = tool_versions(DEFAULT_REGISTRY, DEFAULT_RUNNERS)
    keys = {job.name: job.key(versions) for job in jobs}
    results: dict[str, JobResult] = {}
    to_run = []
    for job in jobs:
        earlier = None if rerun else reusable(job, out_root, keys[job.name])
        if earlier is not None:
            results[job.name] = earlier
            say(f"[{len(results)}/{len(jobs)}] {job.name}: {earlier.status} (done before with the same inputs; skipped)")
        else:
            to_run.append(job)

    def done(result: JobResult) -> None:
        results[result.name] = result
        detail = f": {result.message}" if result.message else ""
        say(f"[{len(results)}/{len(jobs)}] {result.name}: {result.status} in {result.seconds:.0f} s{detail}")

    for job in to_run:
        say(f"{job.name}: {job.model} -> {','.join(job.targets)} ...")
    try:
        if to_run:  # a plan done before starts no pool and no Ray cluster
            executor.run(to_run, out_root, keys, done)
    except BaseException:
        stop_all()  # Ctrl-C or SIGTERM: no job goes on without the plan
        raise
    report = BatchReport(plan, str(out_root), executor.name, tuple(results[j.name] for j in jobs if j.name in results),
                         time.monotonic() - started)
    write_all(report, out_root)
    return report
