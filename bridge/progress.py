"""Progress: the one event type convert and verify report through, and the ``bridge`` logger.

A library caller passes ``progress=callable`` to `bridge.convert` or `bridge.verify` and receives
`ProgressEvent`s; everything is also logged on ``logging.getLogger("bridge")`` (INFO for steps,
DEBUG for detail), which the CLI shows with ``-v``/``-vv``. The library never prints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("bridge")

START, DONE, FAILED, FALLBACK, RUNNING = "start", "done", "failed", "fallback", "running"


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a convert or a verify.

    `kind` is ``start``, ``done`` or ``failed`` of a `step` (``torch->onnx [dynamo]``,
    ``check onnx``, ``run tflite on cpu``), ``fallback`` when a hop's candidate is passed over, or
    ``running`` every 10 s of a long hop (`seconds` so far, its resident memory in `message`).
    """

    kind: str
    step: str
    seconds: float = 0.0
    message: str = ""

    def describe(self) -> str:
        if self.kind == START:
            return f"{self.step} ..."
        if self.kind == RUNNING:
            return f"{self.step}: running for {self.seconds:.0f} s, {self.message}"
        text = f"{self.step}: {self.kind}" + (f" in {self.seconds:.1f} s" if self.kind != FALLBACK else "")
        return f"{text} {self.message}".rstrip()


class Notifier:
    """Sends each event to the caller's callback (one at a time, from any thread) and to the log."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()

    def __call__(self, kind: str, step: str, seconds: float = 0.0, message: str = "") -> None:
        event = ProgressEvent(kind, step, seconds, message)
        # Progress, not warnings: a failed candidate or a fallback is part of the story -v tells.
        level = logging.DEBUG if kind in (START, RUNNING) else logging.INFO
        log.log(level, event.describe())
        if self._callback is not None:
            with self._lock:
                self._callback(event)
