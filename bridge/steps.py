"""What each child step does: every entry point bridge.isolation starts, in one place.

These run inside the child process only. Each takes its typed request (bridge.messages) and
returns its typed response; frameworks are imported here, through the hops and runners.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

from bridge import defaults
from bridge.errors import DeviceUnavailableError
from bridge.formats import Format
from bridge.localization.graph import CapturedGraph
from bridge.messages import (
    CaptureRequest,
    CutRequest,
    CutResponse,
    EmbeddingSizesRequest,
    EmbeddingSizesResponse,
    HopRequest,
    HopResponse,
    InspectRequest,
    InspectResponse,
    MaterializeRequest,
    MaterializeResponse,
    OnnxCensusRequest,
    OpsetUpgradeRequest,
    PretrainedRequest,
    RunRequest,
    RunResponse,
    StepRequest,
    ZooExportRequest,
    ZooExportResponse,
)

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray


def run(request: StepRequest[Any]) -> Any:
    """Do the step `request` asks for and return its response."""
    if isinstance(request, HopRequest):
        return hop(request)
    if isinstance(request, MaterializeRequest):
        return materialize(request)
    if isinstance(request, PretrainedRequest):
        return pretrained(request)
    if isinstance(request, InspectRequest):
        return inspect(request)
    if isinstance(request, RunRequest):
        return run_samples(request)
    if isinstance(request, CaptureRequest):
        return capture(request)
    if isinstance(request, CutRequest):
        return cut(request)
    if isinstance(request, EmbeddingSizesRequest):
        return embedding_sizes(request)
    if isinstance(request, OpsetUpgradeRequest):
        from bridge.onnx_opset import upgrade

        return upgrade(request)
    if isinstance(request, OnnxCensusRequest):
        from bridge.onnx_check import census

        return census(request)
    if isinstance(request, ZooExportRequest):
        return zoo_export(request)
    raise TypeError(f"no step for {type(request).__name__}")


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def hop(request: HopRequest) -> HopResponse:
    """Convert one artifact with the hop the request names."""
    from bridge.hops.base import HopJob
    from bridge.manifest import Tool

    hop_impl = request.hop.load()
    request.out_dir.mkdir(parents=True, exist_ok=True)
    result = hop_impl.convert(HopJob(request.src, request.signature, request.out_dir, request.options, request.candidate,
                                       request.code))
    produced = result.produced
    if request.hop.dst == Format.ONNX and Format.ONNX in request.options.quantize_formats:
        from bridge.quantize import onnx_quantized, schemes_for

        first = produced[0]  # the float ONNX: each quantization is its child
        produced += tuple(onnx_quantized(first.path, first.signature, scheme, request.options)
                          for scheme in schemes_for(Format.ONNX, request.options.quantize))
    return HopResponse(
        produced=produced, tool=Tool(request.hop.tool, package_version(request.hop.distribution)),
        options=result.options, notes=result.notes,
    )


def after(request: StepRequest[Any]) -> None:
    """What a step's child does once its result is written and the parent has gone on (bridge.isolation._child)."""
    if isinstance(request, HopRequest) and request.source_runs:
        run_carried(request.source_runs)


def run_carried(runs: tuple[RunRequest, ...]) -> None:
    """Run the source's check runs a hop carries (HopRequest.source_runs), each result written where the parent reads it.

    They run after the hop's result is written, whatever it was: the hop's next one starts from it
    meanwhile, and only the checks wait for these. Now a check's work, they yield the cores to the
    steps beside them (defaults.CHECK_NICE, as the checks' own children do). A crash here leaves no
    result for them, and the parent runs the source's check on its own (bridge.checking.SourceRun).
    """
    from bridge.isolation import lower_priority, outcome, write_envelope

    lower_priority(defaults.CHECK_NICE)
    for run in runs:
        print(f"bridge: running the source's check inputs ({run.samples} samples, {run.inputs.stem}) in "
              f"{run.runner.runtime} after the hop", file=sys.stderr)
        write_envelope(run.carried_result, outcome(partial(run_samples, run), "run source (carried by the hop)"))


def materialize(request: MaterializeRequest) -> MaterializeResponse:
    """Build a ``package.module:factory`` model and save it in a format the hops read."""
    from bridge.hops.materialize import materialize as save
    from bridge.sources import factory_example_inputs, load_factory

    sys.path[:0] = [str(p) for p in request.import_paths]
    model = load_factory(request.reference)
    specs = request.example_inputs or factory_example_inputs(request.reference)
    return save(model, request.out_dir, specs, request.dynamic_batch, torchscript=request.torchscript,
                origin=request.reference, hf=request.hf)


def pretrained(request: PretrainedRequest) -> MaterializeResponse:
    """Load a Hugging Face folder offline and save it as an ExportedProgram with named inputs and outputs."""
    from bridge.hops.huggingface import materialize_dir

    return materialize_dir(request.directory, request.out_dir, request.model_task, request.example_inputs,
                           request.dynamic_batch, request.trust_code, request.shown, request.hf)


def inspect(request: InspectRequest) -> InspectResponse:
    """Load an artifact and read its signature (and, for torch files, how it is stored)."""
    from bridge.runtimes.base import LoadOptions
    from bridge.runtimes.registry import load_runner_class

    options = LoadOptions(input_specs=request.input_specs, trust_pickle=request.trust_pickle, trust_code=request.trust_code)
    runner = load_runner_class(request.runner)(request.path, options)
    try:
        return InspectResponse(runner.signature(), runner.kind or request.runner.format.value, runner.companions())
    finally:
        runner.close()


def run_samples(request: RunRequest) -> RunResponse:
    """Run every sample through one representation, save its outputs, then time the first sample."""
    import numpy as np

    from bridge.inputs import write_npz
    from bridge.runtimes.base import LoadOptions
    from bridge.runtimes.registry import load_runner_class
    spec = request.runner
    sys.path[:0] = [str(p) for p in request.import_paths]
    if request.device not in spec.devices:
        raise DeviceUnavailableError(f"{request.device}: not available ({spec.runtime} runs on {', '.join(spec.devices)} only)")
    options = LoadOptions(device=request.device, input_specs=request.input_specs, factory=request.factory,
                          trust_pickle=request.trust_pickle, trust_code=request.trust_code)
    with TimingTurn(request.timing_fd) as turn:
        runner = load_runner_class(spec)(request.path, options)
        try:
            with np.load(request.inputs) as data:
                feeds_all = {name: data[name] for name in data.files}
            outputs: dict[str, NDArray[Any]] = {}
            for i in range(request.samples):
                result = runner.run({name: array[i] for name, array in feeds_all.items()})
                for name, value in result.items():
                    outputs[f"{i}/{name}"] = np.asarray(value)
            write_npz(request.outputs, outputs)
            first = {name: array[0] for name, array in feeds_all.items()}
            turn.alone()
            latencies = runner.timed(first, warmup=request.warmup, runs=request.runs)
            return RunResponse(tuple(latencies), request.device, spec.runtime, runner.provider, runner.notes(),
                               tuple(runner.model_latency()))
        finally:
            runner.close()


SETTLE_SECONDS = 0.3
"""How long a side-by-side child waits after its samples before asking to be timed (TimingTurn.alone)."""


class TimingTurn:
    """A reader-writer lock on a file that verify's side-by-side children share, so that timing stays honest.

    The parent takes the lock shared before it starts a child (`shared_turn`), and the child inherits
    it: held shared while the child starts, loads its model and runs its samples (any number of
    children do that at once), then exclusively while it times its runs, so that no other child of
    the same verify starts, loads, runs or is timed meanwhile. flock's conversion drops the shared
    lock before it waits for the exclusive one, so two children that reach their timing together
    cannot deadlock; the lock goes with the descriptor, so a child that crashes or is killed frees it
    (once the parent, which waits for it, closes its copy). Without a descriptor (representations one
    at a time) it does nothing.
    """

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def alone(self) -> None:
        """Let this process's thread pools go idle, wait until no other child holds the lock, then hold it alone."""
        if self._fd is not None:
            import fcntl
            import time

            # A runtime's worker threads spin for a while after its last run (OpenMP's block time,
            # onnxruntime's and Eigen's spinning pools): still holding the lock shared, this child
            # waits them out, so that they never spin beside another child's timed runs.
            time.sleep(SETTLE_SECONDS)
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __enter__(self) -> TimingTurn:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def shared_turn(lock: Path) -> int:
    """Open `lock` and hold it shared (waiting while a child times); the descriptor to hand to a child."""
    import fcntl

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def capture(request: CaptureRequest) -> CapturedGraph:
    """Run one sample keeping every intermediate tensor, with the capture the runner's spec names."""
    import importlib

    import numpy as np

    from bridge.errors import InputError
    from bridge.localization.graph import TensorStore

    if request.runner.capture is None:
        raise InputError(f"{request.path}: {request.runner.runtime} cannot keep intermediate tensors; "
                         "bridge cannot look inside this format")
    module_name, _, function = request.runner.capture.partition(":")
    capture_with = getattr(importlib.import_module(module_name), function)
    with np.load(request.inputs) as data:
        stacked = {name: data[name] for name in data.files}
    count = len(next(iter(stacked.values()))) if stacked else 1
    # The samples before the one captured run first, in the same session: a stateful artifact
    # (variables kept between calls) computes on the captured sample what it computed in verify.
    history = [{name: array[i] for name, array in stacked.items()} for i in range(count - 1)]
    feeds = {name: array[-1] for name, array in stacked.items()}
    with TensorStore(request.tensors) as store:
        graph: CapturedGraph = capture_with(request, feeds, store, history)
    return graph


def cut(request: CutRequest) -> CutResponse:
    """The part of an ONNX model that computes the requested tensors (bridge.localization.bisect)."""
    from bridge.runtimes.onnx_capture import cut_model

    return cut_model(request)


def embedding_sizes(request: EmbeddingSizesRequest) -> EmbeddingSizesResponse:
    """For integer graph inputs that index a Gather's constant table, its row count.

    Generated token ids must stay below the embedding size, or the comparison measures garbage.
    """
    from bridge.runtimes.onnxruntime_runner import embedding_sizes as read_sizes

    return EmbeddingSizesResponse(read_sizes(request.path))


def zoo_export(request: ZooExportRequest) -> ZooExportResponse:
    """Build a zoo model and write it in its source format with its example inputs."""
    from bridge.zoo.export import export_here

    return export_here(request)
