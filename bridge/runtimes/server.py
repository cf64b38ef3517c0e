"""A model server run for one verification: started on 127.0.0.1 ports, waited for within a bound, always stopped.

The serving runtimes (TorchServe, tensorflow_model_server) run the server as a process group of its
own, with its log in a file. `Server.stop` ends the whole group (the server's workers with it).
A watchdog process ends it too if the runner's process dies without stopping it (killed by a
timeout or a signal), so no server outlives the check.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import RuntimeLoadError
from bridge.runtimes.base import Runner

HOST = "127.0.0.1"
START_TIMEOUT = 180.0
"""Seconds a server may take to load the model before the check gives up (its log tail is reported)."""

_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(0.5)
try:
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (ephemeral), free when this returns."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """One HTTP request with a JSON body (or none); the status and the decoded JSON answer (or its text)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - our own 127.0.0.1 server
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return status, raw.decode("utf-8", "replace")


class Server:
    """One server process group: `start`, `wait_until`, `stop` (idempotent; also on errors)."""

    def __init__(self, name: str, command: Sequence[str], *, cwd: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.cwd = cwd
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            try:
                self._process = subprocess.Popen(self.command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise RuntimeLoadError(f"{self.name} did not start: {exc}") from exc
        self._watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self._process.pid)],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def tail(self, lines: int = 15) -> str:
        """The end of the server's log, for an error message."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"

    def wait_until(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        """Poll `ready` until it holds; a RuntimeLoadError with the log tail if the server exits or the bound passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self._process.poll() if self._process else None
                raise RuntimeLoadError(f"{self.name} exited (code {code}) before the model was ready; "
                                       f"its log ({self.log}) ends:\n{self.tail()}")
            try:
                if ready():
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        self.stop()
        raise RuntimeLoadError(f"{self.name} did not come up within {timeout:.0f} s; its log ({self.log}) ends:\n{self.tail()}")

    def stop(self) -> None:
        """End the server and everything it started: SIGTERM to the group, SIGKILL after 15 s."""
        process, self._process = self._process, None
        if process is not None:
            for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=wait)
                    # The leader is gone; its workers may not be: the group is ended all the same.
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                except subprocess.TimeoutExpired:
                    continue
                break
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait()


class ServerRunner(Runner):
    """A runner whose runtime is a server it starts on first use (`_start`) and stops on `close`, with its folder."""

    _server: Server | None = None
    _work: Path | None = None

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        work, self._work = self._work, None
        if work is not None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
