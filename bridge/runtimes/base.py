"""The runner interface every runtime implements.

A runner loads one artifact on one device, tells its signature, and runs feeds keyed by the
artifact's own tensor names. Latency is measured in one place, `bridge.verification.timing.measure`;
which runner runs which format is bridge.runtimes.registry; the child step that drives a
runner is bridge.steps.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from bridge.formats import Format
from bridge.signature import Signature, TensorSpec

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class LoadOptions:
    """What a runner needs beyond the path."""

    device: str = "cpu"
    input_specs: tuple[TensorSpec, ...] | None = None
    """Input names, shapes and dtypes, for formats that do not store them (TorchScript)."""
    factory: str | None = None
    """Build the model by calling this ``package.module:factory`` instead of loading the path (the eager source)."""
    trust_pickle: bool = False
    trust_code: bool = False


class Runner(abc.ABC):
    """One artifact loaded in one runtime on one device."""

    #: Short name shown in reports: torch, onnxruntime, tensorflow, keras, litert.
    runtime: str = ""
    #: How the file is stored, where a format has several kinds (torch: exported_program, torchscript).
    kind: str = ""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        self.path = path
        self.options = options

    @property
    def provider(self) -> str:
        """What actually runs the model (onnxruntime's execution provider, a TF device); the device by default."""
        return self.options.device

    @abc.abstractmethod
    def signature(self) -> Signature:
        """The artifact's inputs and outputs, named as the artifact names them."""

    @abc.abstractmethod
    def run(self, feeds: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Run once; feeds and outputs are keyed by the artifact's tensor names."""

    def companions(self) -> tuple[str, ...]:
        """Files beside the artifact that loading it reads, relative to its directory (ONNX external data)."""
        return ()

    def timed(self, feeds: dict[str, NDArray[Any]], *, warmup: int, runs: int) -> list[int]:
        """Nanoseconds for each of `runs` calls after `warmup`: `bridge.verification.timing.measure` around `run`.

        A runtime in another process (Node.js) overrides it to measure on its own side of the boundary.
        """
        from bridge.verification.timing import measure

        return measure(self.run, feeds, self.synchronize, warmup=warmup, runs=runs)

    def notes(self) -> tuple[str, ...]:
        """What the report says about this run beside its numbers (warm-up records replayed, how latency was taken)."""
        return ()

    def model_latency(self) -> list[int]:
        """Nanoseconds the model alone took in the timed runs, where `timed` measures more (a server's round trip)."""
        return []

    def synchronize(self) -> None:  # noqa: B027 - a no-op by default: only asynchronous devices wait
        """Wait for queued device work (CUDA) so timings measure the whole call."""

    def close(self) -> None:  # noqa: B027 - most runtimes free everything when garbage collected
        """Release what the runner holds."""


def open_runner(fmt: Format, path: Path, options: LoadOptions) -> Runner:
    """Load `path` in the reference runtime of `fmt` (the first the default registry lists)."""
    from bridge.runtimes.registry import DEFAULT_RUNNERS, load_runner_class

    return load_runner_class(DEFAULT_RUNNERS.primary(fmt))(path, options)


def read_signature(fmt: Format, path: Path, options: LoadOptions | None = None) -> Signature:
    """Load an artifact just to read its signature (hops use it on what they wrote)."""
    runner = open_runner(fmt, path, options or LoadOptions())
    try:
        return runner.signature()
    finally:
        runner.close()
