"""The runner interface every runtime implements, and the child-process entry points.

A runner loads one artifact on one device, tells its signature, and runs feeds keyed by the
artifact's own tensor names. Latency is measured in one place, `bridge.verify.timing.measure`.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import RuntimeLoadError
from bridge.formats import Format
from bridge.signature import Signature

if TYPE_CHECKING:
    import numpy as np

RUNNERS: dict[Format, str] = {
    Format.TORCH: "bridge.runtimes.torch_runner:TorchRunner",
    Format.ONNX: "bridge.runtimes.onnxruntime_runner:OnnxruntimeRunner",
    Format.TF: "bridge.runtimes.tensorflow_runner:SavedModelRunner",
    Format.KERAS: "bridge.runtimes.tensorflow_runner:KerasRunner",
    Format.TFLITE: "bridge.runtimes.tflite_runner:TfliteRunner",
}

RUNTIME_NAMES: dict[Format, str] = {
    Format.TORCH: "torch",
    Format.ONNX: "onnxruntime",
    Format.TF: "tensorflow",
    Format.KERAS: "keras",
    Format.TFLITE: "litert",
}


@dataclass(frozen=True)
class LoadOptions:
    """What a runner needs beyond the path."""

    device: str = "cpu"
    input_specs: dict[str, tuple[tuple[int, ...], str]] | None = None
    """Input (shape, dtype) by name, for formats that do not store them (TorchScript)."""
    trust_pickle: bool = False
    trust_code: bool = False


class Runner(abc.ABC):
    """One artifact loaded in one runtime on one device."""

    #: Short name shown in reports: torch, onnxruntime, tensorflow, keras, litert.
    runtime: str = ""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        self.path = path
        self.options = options

    @classmethod
    def available_devices(cls) -> tuple[str, ...]:
        """The devices this runtime can use here, ``cpu`` first."""
        return ("cpu",)

    @abc.abstractmethod
    def signature(self) -> Signature:
        """The artifact's inputs and outputs, named as the artifact names them."""

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; feeds and outputs are keyed by the artifact's tensor names."""

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA) so timings measure the whole call."""

    def close(self) -> None:
        """Release what the runner holds."""


def runner_class(fmt: Format) -> type[Runner]:
    module_name, _, class_name = RUNNERS[fmt].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RuntimeLoadError(f"the {RUNTIME_NAMES[fmt]} runtime is not installed ({exc.name}); pip install 'bridge[all]'") from exc
    cls: type[Runner] = getattr(module, class_name)
    return cls


def open_runner(fmt: Format, path: Path, options: LoadOptions) -> Runner:
    return runner_class(fmt)(path, options)


def read_signature(fmt: Format, path: Path, options: LoadOptions | None = None) -> Signature:
    """Load an artifact just to read its signature (hops use it on what they wrote)."""
    runner = open_runner(fmt, path, options or LoadOptions())
    try:
        return runner.signature()
    finally:
        runner.close()


def _load_options(request: dict[str, Any]) -> LoadOptions:
    specs = request.get("input_specs") or None
    return LoadOptions(
        device=request.get("device", "cpu"),
        input_specs={k: (tuple(v[0]), str(v[1])) for k, v in specs.items()} if specs else None,
        trust_pickle=bool(request.get("trust_pickle")),
        trust_code=bool(request.get("trust_code")),
    )


def inspect_task(request: dict[str, Any]) -> dict[str, Any]:
    """Child entry point: load an artifact and return its signature (and, for torch, its kind)."""
    fmt = Format(request["format"])
    runner = open_runner(fmt, Path(request["path"]), _load_options(request))
    try:
        return {"signature": runner.signature().to_json(), "kind": getattr(runner, "kind", fmt.value)}
    finally:
        runner.close()


def run_task(request: dict[str, Any]) -> dict[str, Any]:
    """Child entry point: run every sample through an artifact, save outputs, time the first sample."""
    import numpy as np

    from bridge.verify.timing import measure

    fmt = Format(request["format"])
    options = _load_options(request)
    runner = open_runner(fmt, Path(request["path"]), options)
    try:
        with np.load(request["inputs"]) as data:
            feeds_all = {name: data[name] for name in data.files}
        samples = int(request["samples"])
        outputs: dict[str, np.ndarray] = {}
        for i in range(samples):
            result = runner.run({name: array[i] for name, array in feeds_all.items()})
            for name, value in result.items():
                outputs[f"{i}/{name}"] = np.asarray(value)
        first = {name: array[0] for name, array in feeds_all.items()}
        latencies = measure(runner.run, first, runner.synchronize,
                            warmup=int(request.get("warmup", 3)), runs=int(request.get("runs", 20)))
        np.savez(request["outputs"], **outputs)
        return {"latency_ns": latencies, "device": options.device, "runtime": runner.runtime,
                "detail": getattr(runner, "detail", "")}
    finally:
        runner.close()
