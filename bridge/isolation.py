"""Run one step (a hop, a runtime, a model factory) in a child process, so a crash or a hang is that step's failure.

Converters abort the process on models they do not understand (the TFLite converter can), and
loading a hostile file must never take bridge down with it. Each step runs as
``python -m bridge.isolation TASK REQUEST RESULT``: the request and the result are typed records
(bridge.messages) written as JSON files; the child's stdout and stderr go to a log whose tail is
reported when the step fails. A step that exits by a signal, runs past its timeout or raises is
turned into a HopError (or the BridgeError subclass it raised) in the parent; the run carries on.
The child side, the functions each task calls, is bridge.steps.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge import errors, records
from bridge.memory import TreeWatch, human
from bridge.progress import log as logger

if TYPE_CHECKING:
    from bridge.messages import StepError, StepRequest

# bridge.messages (and numpy, through it) is imported where it is used, not here: a step's child imports this
# module first, and its libraries (torch: seconds) should start loading as soon as it is up.

LOG_TAIL_LINES = 25

_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()
_ended_by_bridge: set[int] = set()
"""Steps bridge killed itself (a timeout, Ctrl-C, a budget): their SIGKILL is not the kernel's OOM killer."""


def end_all() -> None:
    """Kill every child step still running (their whole process groups), and wait for them.

    Called when bridge is interrupted (Ctrl-C, SIGTERM) before it removes its partial output, so
    no child writes into a directory that is being removed, and none outlives bridge.
    """
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc)

# Quiet, deterministic children: no TF banner, no oneDNN notice, one BLAS thread pool each.
_CHILD_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "PYTHONUNBUFFERED": "1",
    "PYTHONWARNINGS": "ignore",
    "TQDM_DISABLE": "1",
}


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_isolated[R](
    request: StepRequest[R],
    *,
    stage: str,
    timeout: float | None = None,
    hide_gpu: bool = False,
    work_dir: Path | None = None,
    nice: int = 0,
    log_to: Path | None = None,
    max_memory: int | None = None,
    on_beat: Callable[[float, int], None] | None = None,
    peak_out: list[int] | None = None,
    warm: Prestarted | None = None,
    pass_fds: tuple[int, ...] = (),
    preload: tuple[str, ...] = (),
    hidden: tuple[str, ...] = (),
    then: Callable[[str | None], None] | None = None,
) -> R:
    """Run `request` in a child process and return its typed response, or raise the error it ended with.

    `nice` lowers the child's CPU priority (convert's checks yield to the hops beside them).
    `log_to` keeps the child's whole output (stdout and stderr) in that file, success or failure;
    a failure names it. The child's process tree is sampled (bridge.memory.TreeWatch): `max_memory`
    stops it when it goes over, `on_beat(elapsed, rss)` hears from a long step every 10 s, and a
    step that ends by SIGKILL is reported as out of memory with its peak; `peak_out` receives the
    peak resident bytes of the tree. `warm` is a child started earlier for this step; without one,
    the child started now imports `preload` before it reads the request (as a warm one did), and
    cannot import `hidden`.

    `then` is for a step whose child goes on after writing its result (bridge.steps.after: the
    source's runs a hop carries): the response is returned as soon as it is written, the child
    carries on, and `then(log)` is called, from another thread, once it has ended however it ended
    (within `timeout` again). A child that ends before its result calls `then` before this returns.
    """
    task = type(request).task
    child = warm if warm is not None and warm.fits(task, hide_gpu, nice, work_dir) else None
    if warm is not None and child is None:
        warm.close()  # started for another kind of step: not this one's
    child = child or Prestarted(task, preload, hidden=hidden, hide_gpu=hide_gpu, nice=nice, work_dir=work_dir, pass_fds=pass_fds)
    return _run_in(child, request, stage, timeout, log_to, max_memory, on_beat, peak_out, then)


class Prestarted:
    """A step's child process, started before its request is known: Python up and `preload` imported.

    A hop whose parent is still being converted can have its child ready (TensorFlow imported, which
    is seconds) by the time the parent's artifact is written: run_isolated(..., warm=) hands it the
    request. The child waits on its stdin for a line; an end of file (close() before use, or the
    parent gone) ends it without doing anything. Without `preload`, the request is expected at once.
    It is counted among the running children (end_all ends it), and dies with the parent. The
    modules in `hidden` cannot be imported in it (`_hide`). It says on a pipe of its own (`done`)
    when its result is written: the parent need not wait for it to end, nor poll for it.
    """

    def __init__(self, task: str, preload: tuple[str, ...], *, hide_gpu: bool = False, nice: int = 0,
                 work_dir: Path | None = None, pass_fds: tuple[int, ...] = (), hidden: tuple[str, ...] = ()) -> None:
        self.task, self.hide_gpu, self.nice, self.work_dir = task, hide_gpu, nice, work_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="bridge-step-", dir=work_dir)
        tmp = Path(self._tmp.name)
        self.req_path, self.res_path, self.log_path = tmp / "request.json", tmp / "result.json", tmp / "log.txt"
        # The child's own temporary files (TensorFlow's autograph modules, a converter's scratch) go in a folder
        # removed with it: a child ends by os._exit, so the libraries' atexit clean-ups never run. It is beside
        # the system's, not under work_dir, to keep paths short (a Unix socket's path has 107 bytes at most).
        self._scratch = tempfile.TemporaryDirectory(prefix="bridge-tmp-")
        env = {**os.environ, **_CHILD_ENV, "BRIDGE_PARENT_PID": str(os.getpid()), "BRIDGE_STEP_NICE": str(nice),
               "BRIDGE_PRELOAD": ",".join(preload), "BRIDGE_HIDDEN": ",".join(hidden),
               "TMPDIR": self._scratch.name, "TMP": self._scratch.name, "TEMP": self._scratch.name}
        if hide_gpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        # -P: the working directory is not put on the child's sys.path, so a folder that holds a
        # `torch.py` or a `bridge` package cannot run code in it; a step that imports a factory the
        # user named gets the directories it needs in its request.
        cmd = [sys.executable, "-P", "-m", "bridge.isolation", task, str(self.req_path), str(self.res_path)]
        self.done, done_w = os.pipe()
        env["BRIDGE_DONE_FD"] = str(done_w)
        try:
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE, env=env,
                                             start_new_session=True, pass_fds=(*pass_fds, done_w))
        finally:
            os.close(done_w)  # the child's end: only the child holds it, so its exit reads as an end of file
        with _running_lock:
            _running.add(self.proc)
        self.used = False
        self._closed = False
        self._close_lock = threading.Lock()

    def fits(self, task: str, hide_gpu: bool, nice: int, work_dir: Path | None) -> bool:
        """Whether this child can run a step of `task` started with these settings (they are fixed at its start).

        One started with no `work_dir` fits any: that is only where its request and result files are.
        """
        return (not self.used and self.proc.poll() is None
                and (task, hide_gpu, nice) == (self.task, self.hide_gpu, self.nice)
                and self.work_dir in (None, work_dir))

    def go(self, request: StepRequest[Any]) -> None:
        """Hand the child its request."""
        self.used = True
        self.req_path.write_text(json.dumps(records.to_json(request)), encoding="utf-8")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # it died while it waited (its log says why); the wait that follows reports how it ended

    def close(self) -> None:
        """End the child if it is still running (a warm child never used, one that carries on), and remove its files."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self.proc.poll() is None:
            _kill_group(self.proc)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        os.close(self.done)
        _forget(self.proc)
        self._tmp.cleanup()
        self._scratch.cleanup()


def _forget(proc: subprocess.Popen[bytes]) -> bool:
    """Take an ended child off the running list; whether bridge ended it itself."""
    with _running_lock:
        _running.discard(proc)
        ended_by_bridge = proc.pid in _ended_by_bridge
        _ended_by_bridge.discard(proc.pid)
    return ended_by_bridge


def _run_in[R](child: Prestarted, request: StepRequest[R], stage: str, timeout: float | None, log_to: Path | None,
               max_memory: int | None, on_beat: Callable[[float, int], None] | None, peak_out: list[int] | None,
               then: Callable[[str | None], None] | None) -> R:
    logger.debug("%s: child %s (log %s)", stage, child.task, log_to or "not kept")
    child.go(request)
    proc, log_path = child.proc, child.log_path
    watch = TreeWatch(proc.pid, max_memory, on_beat)
    carries_on = False
    kept: str | None = None
    try:
        try:
            code = wait_watched(proc, watch, timeout, child.done)
            if code is None and then is None:
                code = proc.wait()  # its result is written, and it ends at once (os._exit)
            carries_on = code is None
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log_text = log_path.read_text(errors="replace")
            kept = _keep_log(log_path, log_to)
            raise errors.HopError(
                f"{stage}: gave up after {timeout:g} s (--timeout); raise it or simplify the model",
                stage=stage, detail=tail(log_text), log=kept,
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            ended_by_bridge = False if carries_on else _forget(proc)
            logger.debug("%s: child %s %s, peak resident memory %s", stage, child.task,
                         "wrote its result and carries on" if carries_on else "ended", human(watch.peak))
            if peak_out is not None:
                peak_out.append(watch.peak)
        log_text = log_path.read_text(errors="replace")
        kept = _keep_log(log_path, log_to)  # a child that carries on goes on writing to it where it now is
        response: R | None = read_envelope(child.res_path, type(request).response, stage, log_text, kept)
        if response is not None:
            return response
        assert code is not None  # a child that said its result was written wrote one
        raise errors.HopError(f"{stage}: {ending(code, watch, ended_by_bridge)}", stage=stage, detail=tail(log_text),
                              log=kept)
    finally:
        if carries_on:
            assert then is not None
            threading.Thread(target=_see_out, args=(child, watch, timeout, kept, then), daemon=True,
                             name=f"bridge-{stage}-after").start()
        else:
            try:
                if then is not None:
                    then(kept)
            finally:
                child.close()


def _see_out(child: Prestarted, watch: TreeWatch, timeout: float | None, log: str | None,
             then: Callable[[str | None], None]) -> None:
    """Wait for a child that carries on after its result (within `timeout`), then tell `then` and remove its files."""
    try:
        try:
            wait_watched(child.proc, watch, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(child.proc)
        then(log)
    finally:
        child.close()  # takes it off the running list too


def ending(code: int, watch: TreeWatch, ended_by_bridge: bool) -> str:
    """How a step that wrote no result ended: out of memory (over its budget, or SIGKILLed by the kernel), a signal, a code."""
    if watch.over_budget or (code == -signal.SIGKILL and not ended_by_bridge):
        return watch.out_of_memory()
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        return f"crashed with signal {name}"
    return f"exited with code {code} before writing a result"


def wait_watched(proc: subprocess.Popen[bytes], watch: TreeWatch, timeout: float | None, done: int | None = None) -> int | None:
    """Wait for the child, sampling its memory; stop it when it goes over an explicit budget. TimeoutExpired past `timeout`.

    Its exit code; or None, given the read end of its `done` pipe (Prestarted.done), as soon as it says
    its result is written (it may still be running). The pipe wakes the wait the moment the child
    writes to it or ends, where Popen.wait(timeout) sleeps up to 50 ms between looks.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    poll = select.poll()  # not select.select, which takes no descriptor past 1023 (a long-lived batch worker's)
    if done is not None:
        poll.register(done, select.POLLIN)
    while True:
        step = watch.INTERVAL if deadline is None else min(watch.INTERVAL, max(deadline - time.monotonic(), 0.0))
        if done is not None:
            if poll.poll(step * 1000):
                if os.read(done, 1):
                    return None
                poll.unregister(done)
                done = None  # an end of file: the child has ended (or closed it); its exit code is next
                continue
            code = proc.poll()  # ended while a process it forked still holds the pipe
            if code is not None:
                return code
        else:
            try:
                return proc.wait(timeout=step)
            except subprocess.TimeoutExpired:
                pass
        if deadline is not None and time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        if watch.sample():
            _kill_group(proc)
            return proc.wait()


def _keep_log(log_path: Path, log_to: Path | None) -> str | None:
    """Move the child's log to `log_to` (creating its directory); its new path, or None when not kept."""
    if log_to is None:
        return None
    log_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(log_path, log_to)
    return str(log_to)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with _running_lock:
        _ended_by_bridge.add(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _rebuild_error(error: StepError, stage: str, log_text: str, log: str | None) -> errors.BridgeError:
    cls = getattr(errors, error.type, None)
    if isinstance(cls, type) and issubclass(cls, errors.HopError):
        return cls(error.message, stage=error.stage or stage, detail=error.detail or tail(log_text), log=log)
    if isinstance(cls, type) and issubclass(cls, errors.BridgeError):
        return cls(error.message)
    # An unexpected exception inside a converter: the hop failed; keep its traceback as detail.
    detail = error.traceback or tail(log_text)
    return errors.HopError(f"{stage}: {error.type}: {_first_line(error.message)}", stage=stage, detail=tail(detail),
                           log=log)


def _first_line(message: str) -> str:
    """The message's first line; when it only announces what follows ("Graph execution error:"), with the last."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    first = lines[0]
    if first.endswith(":") and len(lines) > 1:
        first = f"{first} {lines[-1]}"
    return first[:300]


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this step if the bridge process that started it dies (even by SIGKILL).

    Each step runs in its own session so the parent can kill its whole group on a timeout; that
    also means killing the parent's group does not reach it. Without this, a hung converter would
    outlive a killed `bridge convert`.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != int(os.environ.get("BRIDGE_PARENT_PID", os.getppid())):
        os._exit(1)  # the parent died before prctl took effect


def lower_priority(nice: int) -> None:
    """Run this step at `nice`, and make that count against bridge's other steps.

    Each step is a session of its own (so a timeout can kill its group), and where the kernel
    groups processes by session for scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on
    by default in most distributions) a process's nice value only ranks it inside its own group:
    a niced check would take a whole core from the hop beside it all the same. The group's nice
    value is set too, where the kernel has one.
    """
    if nice <= 0:
        return
    os.nice(nice)
    try:
        Path("/proc/self/autogroup").write_text(str(nice), encoding="ascii")
    except OSError:
        pass  # no autogroup here (another kernel or OS, or not allowed): the process's nice value is what counts


def _hide(names: str) -> None:
    """Make these installed modules unimportable here, as if absent: ``import`` raises ImportError and
    importlib.util.find_spec answers None. A step's libraries that import one only to offer what the step
    does not use then skip it (TensorFlow imports jax whenever it is installed, for tf.lite's jax support:
    1.2 s of every TensorFlow import)."""
    for name in filter(None, names.split(",")):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _preload_and_wait() -> None:
    """Import what the step will need, then wait for the parent's go; end quietly if it never comes.

    The collector is off while they import: an import makes objects that live as long as the process,
    never garbage, and torch's or TensorFlow's makes so many that the collector ran hundreds of times
    over them, a quarter of the import (``import tensorflow, onnx2tf`` 2.8 s -> 2.2 s here). What was
    imported is then moved out of its sight (gc.freeze): a full collection no longer walks the hundreds
    of thousands of objects of torch or TensorFlow (onnx2tf calls gc.collect() twice per conversion;
    torch.onnx's export triggers several).
    """
    import gc
    import importlib

    gc.disable()
    try:
        for name in filter(None, os.environ.get("BRIDGE_PRELOAD", "").split(",")):
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - the step imports it again, and that failure is the one reported
                print(f"bridge: preloading {name} failed ({type(exc).__name__}: {exc}); the step will import it itself",
                      file=sys.stderr)
    finally:
        gc.enable()
    gc.freeze()
    if sys.stdin.readline().strip() != "go":
        os._exit(0)  # not used: closed by the parent, or the parent is gone


def outcome(run: Callable[[], Any], what: str) -> dict[str, Any]:
    """Call `run` (a step, in the child) and wrap what it returned or raised as a result envelope for the parent."""
    from bridge.messages import StepError

    try:
        return {"response": records.to_json(run())}
    except errors.BridgeError as exc:
        print(f"bridge step {what} failed: {type(exc).__name__}: {exc}", file=sys.stderr)  # the kept log says why
        return {"error": records.to_json(StepError(type(exc).__name__, str(exc), getattr(exc, "stage", ""),
                                                   getattr(exc, "detail", "")))}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as this step's failure
        traceback.print_exc()  # into the step's log, which is kept: the whole story of the failure
        return {"error": records.to_json(StepError(type(exc).__name__, str(exc), traceback=traceback.format_exc()))}


def write_envelope(path: Path, envelope: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(envelope), encoding="utf-8")
    os.replace(tmp, path)


def read_envelope[R](path: Path, response: type[R], stage: str, log_text: str, log: str | None) -> R | None:
    """The response a child wrote at `path`; the BridgeError it ended with is raised; None when it wrote nothing."""
    if not path.is_file():
        return None
    envelope = json.loads(path.read_text(encoding="utf-8"))
    if "error" in envelope:
        from bridge.messages import StepError

        raise _rebuild_error(records.from_json(StepError, envelope["error"]), stage, log_text, log)
    result: R = records.from_json(response, envelope["response"])
    return result


def _tell_parent_done(done: int) -> None:
    """Say on the `done` pipe that the result is written (Prestarted.done)."""
    if done < 0:
        return
    try:
        os.write(done, b"1")
        os.close(done)
    except OSError:
        pass  # the parent is gone, or did not give one: it sees the result when this process ends


def _child(task: str, req_path: str, res_path: str) -> int:
    _die_with_parent()
    done = int(os.environ.get("BRIDGE_DONE_FD", "-1") or -1)
    if done >= 0:
        os.set_inheritable(done, False)  # the parent reads this process's ending from it: not a converter's subprocess's
    lower_priority(int(os.environ.get("BRIDGE_STEP_NICE", "0") or 0))
    _hide(os.environ.get("BRIDGE_HIDDEN", ""))
    _preload_and_wait()
    requests: list[StepRequest[Any]] = []

    def step() -> Any:
        from bridge import steps
        from bridge.messages import REQUESTS

        requests.append(records.from_json(REQUESTS[task], json.loads(Path(req_path).read_text(encoding="utf-8"))))
        return steps.run(requests[0])

    write_envelope(Path(res_path), outcome(step, task))
    sys.stdout.flush()
    sys.stderr.flush()
    _tell_parent_done(done)
    if requests:
        from bridge import steps

        steps.after(requests[0])
        sys.stdout.flush()
    # Skip interpreter teardown: TensorFlow and torch can hang or crash in their atexit hooks.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:4]))
