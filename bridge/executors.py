"""Where `bridge batch` runs its jobs: a local pool (the default) or a Ray cluster.

Both run the same `bridge.batch.run_job`, which starts the job's own processes, so a job that
crashes or hangs ends as that job's error and the results are the same on either. An executor
has a `name` and `run(jobs, out_root, keys, done)`, calling `done(result)` as each job ends.

The pool runs `jobs` at once (default: `default_jobs`, from the cores and the memory available),
each with the cores shared out among them for its hops and checks. Ray runs each job as a task
asking for `cpus` cores and `memory` bytes, on a worker used for that one task (``max_calls=1``:
a new worker per job, so framework memory does not pile up), with no runtime environment of its
own: every node must have this venv at the same path and see the output folder (a shared file
system), as Ray's own docs assume for local code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bridge.batch import ERROR, Job, JobResult, run_job, stop_all
from bridge.errors import InputError, MissingExtraError

JOB_MEMORY = 3 << 30
"""Memory one job of the zoo's size takes at its peak (convert's largest hop, bench/memory_growth.py): the
pool runs no more jobs at once than fit, and Ray tasks ask for this much unless told."""


def default_jobs() -> int:
    """As many jobs as there are cores and as fit in the memory available, at least one."""
    from bridge.memory import available

    cores = os.cpu_count() or 1
    memory, _ = available()
    by_memory = max(1, memory // JOB_MEMORY) if memory else cores
    return max(1, min(cores, by_memory))


class LocalPool:
    """Jobs as processes on this machine, `jobs` at a time."""

    name = "pool"

    def __init__(self, jobs: int | None = None) -> None:
        if jobs is not None and jobs < 1:
            raise InputError(f"--jobs {jobs}: run at least one job at a time")
        self.jobs = jobs or default_jobs()

    def run(self, jobs: Sequence[Job], out_root: Path, keys: Mapping[str, str], done: Callable[[JobResult], None]) -> None:
        steps = max(1, (os.cpu_count() or 1) // min(self.jobs, max(len(jobs), 1)))
        lock = threading.Lock()

        def one(job: Job) -> None:
            try:
                result = run_job(job, out_root, keys[job.name], steps=steps, worker=self.name)
            except OSError as exc:  # the job could not even start (a folder not writable): its error, not the plan's
                result = JobResult(job.name, job.model, job.targets, ERROR, 2, 0.0, message=f"could not run: {exc}",
                                   key=keys[job.name], worker=self.name)
            with lock:
                done(result)

        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="bridge-batch")
        futures = [pool.submit(one, job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except BaseException:  # Ctrl-C: no job starts, the running ones are ended, then the plan stops
            pool.shutdown(wait=False, cancel_futures=True)
            stop_all()
            raise
        pool.shutdown()


class RayExecutor:
    """Jobs as Ray tasks on a running cluster (`address`) or a local one started for the plan (None)."""

    name = "ray"

    def __init__(self, address: str | None = None, *, cpus: float = 1.0, memory: int = JOB_MEMORY,
                 local_cpus: int | None = None) -> None:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise MissingExtraError("--executor ray needs Ray: pip install 'bridge[ray]' (or use the default local pool)")
        if cpus <= 0:
            raise InputError(f"--ray-cpus {cpus}: ask for a positive number of cores per job")
        self.address, self.cpus, self.memory, self.local_cpus = address, cpus, memory, local_cpus

    def run(self, jobs: Sequence[Job], out_root: Path, keys: Mapping[str, str], done: Callable[[JobResult], None]) -> None:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:  # a local cluster for this plan: its memory is what this machine has
                ray.init(num_cpus=self.local_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=self.cpus, memory=self.memory, max_calls=1, max_retries=0)(_ray_job)
            steps = max(1, int(self.cpus))
            pending = {task.remote(job, str(out_root), keys[job.name], steps): job for job in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except ray.exceptions.RayError as exc:  # the worker died or Ray could not schedule it: this job's error
                    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
                    result = JobResult(job.name, job.model, job.targets, ERROR, 2, 0.0,
                                       message=f"its Ray task failed: {first}", key=keys[job.name], worker=self.name)
                done(result)
        finally:
            if started_here:
                ray.shutdown()


def _ray_job(job: Job, out_root: str, key: str, steps: int) -> JobResult:
    """The task body: the same `run_job` as the pool's, tagged with the node it ran on."""
    import ray

    node = ray.get_runtime_context().get_node_id()[:12]
    return run_job(job, Path(out_root), key, steps=steps, worker=f"ray:{node}")


def executor_for(name: str, *, jobs: int | None = None, address: str | None = None, cpus: float = 1.0,
                 memory: int | None = None) -> Any:
    """The executor `name` (``pool`` or ``ray``) with its settings."""
    if name == "pool":
        if address is not None:
            raise InputError("--address is for --executor ray; drop it or add --executor ray")
        return LocalPool(jobs)
    if name == "ray":
        return RayExecutor(address, cpus=cpus, memory=memory or JOB_MEMORY, local_cpus=jobs)
    raise InputError(f"--executor {name}: use pool or ray")
