"""Typed requests to, and responses from, every child step (bridge.isolation runs them).

One request type per step, each naming its task and its response type; the child's entry
points are in bridge.steps. Both sides go through bridge.records, so a field the child
returns is a typed field the parent reads, never a key looked up in a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bridge.formats import Format, RunnerSpec
from bridge.inputs import ExampleInputs
from bridge.localization.graph import CapturedGraph
from bridge.manifest import OpsetUpgrade, Tool
from bridge.options import ConvertOptions
from bridge.registry import Candidate, HopSpec
from bridge.signature import Signature, TensorSpec


class StepRequest[R]:
    """A request for one child step; `response` is the record type the child answers with."""

    task: ClassVar[str]
    response: ClassVar[type[Any]]


# --- hop: convert one artifact into the next format ---------------------------------------


@dataclass(frozen=True)
class Produced:
    """One file or directory a hop wrote, with its signature relative to the source."""

    path: Path
    signature: Signature
    precision: str = "float32"
    name_map: Path | None = None
    """A file the hop wrote beside it: the converter's names for the parent's tensors (bridge.tensor_names/1)."""
    derived: Derivation | None = None
    """Made by a second tool (a quantization), which the manifest records as this artifact's own."""


@dataclass(frozen=True)
class Derivation:
    """How a second artifact of a hop was made: the tool and its options, and from what."""

    tool: Tool
    options: dict[str, Any]
    from_first: bool = True
    """Made from the hop's first artifact (the float ONNX a quantization starts from), which is then its parent;
    False: from the hop's parent, like the first (a quantized TFLite from the parent SavedModel)."""


@dataclass(frozen=True)
class HopResponse:
    produced: tuple[Produced, ...]
    tool: Tool
    options: dict[str, Any]
    """The options the wrapped library was called with, as recorded in the manifest."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceCode:
    """The ``package.module:factory`` the user named for this convert, for a hop that converts the Python code
    itself (jax -> onnx: jax2onnx traces the function, which no saved artifact holds). Never read from a folder."""

    reference: str
    import_paths: tuple[Path, ...] = ()
    """Directories put first on the child's sys.path (the user's working directory)."""
    example_inputs: ExampleInputs | None = None
    """The inputs the source was built with (as the user gave them), so the hop builds the same model."""


@dataclass(frozen=True)
class HopRequest(StepRequest[HopResponse]):
    """Convert `src` (whose signature relative to the source is `signature`) into `out_dir`."""

    task: ClassVar[str] = "hop"
    response: ClassVar[type[Any]] = HopResponse
    hop: HopSpec
    """The hop as the parent's registry declares it (a test may have built its own registry)."""
    src: Path
    signature: Signature
    out_dir: Path
    options: ConvertOptions
    candidate: Candidate
    code: SourceCode | None = None
    source_runs: tuple[RunRequest, ...] = ()
    """The source's check runs (one per input set), done in this child once the hop's result is written
    (bridge.steps.after): the hop loads the source in the runtime they run in, so its import is paid once
    (bridge.checking.SourceRun). Each one's result goes to its `RunRequest.carried_result`, whatever the hop's
    own outcome."""


# --- materialize: build a factory's model and save it -----------------------------------------


@dataclass(frozen=True)
class MaterializeResponse:
    path: Path
    format: Format
    kind: str
    """How the model was saved: ``exported_program``, ``torchscript``, ``keras``."""
    example_inputs: ExampleInputs | None = None
    """The example inputs used (from the request, or the factory's own ``example_inputs``)."""
    note: str | None = None


@dataclass(frozen=True)
class HfExport:
    """How a Transformers model is exported beyond its inputs (``--dynamic-seq``, ``--kv-cache``)."""

    dynamic_seq: bool = False
    kv_cache: bool = False

    @classmethod
    def of(cls, options: Any) -> HfExport | None:
        """From ConvertOptions; None when neither is asked for."""
        return cls(options.dynamic_seq, options.kv_cache) if options.dynamic_seq or options.kv_cache else None


@dataclass(frozen=True)
class MaterializeRequest(StepRequest[MaterializeResponse]):
    """Call ``package.module:factory`` and save what it builds into `out_dir`."""

    task: ClassVar[str] = "materialize"
    response: ClassVar[type[Any]] = MaterializeResponse
    reference: str
    out_dir: Path
    example_inputs: ExampleInputs | None = None
    dynamic_batch: bool = False
    hf: HfExport | None = None
    torchscript: bool = False
    """Trace a PyTorch module to TorchScript (for the TorchScript exporter) instead of torch.export."""
    import_paths: tuple[Path, ...] = ()
    """Directories put first on the child's sys.path to import the factory (the user's working directory)."""


@dataclass(frozen=True)
class PretrainedRequest(StepRequest[MaterializeResponse]):
    """Load a Hugging Face ``save_pretrained`` folder (offline) and save it as ``out_dir/model.pt2``."""

    task: ClassVar[str] = "pretrained"
    response: ClassVar[type[Any]] = MaterializeResponse
    directory: Path
    out_dir: Path
    model_task: str | None = None
    """``--task``: the Auto class to load it with, instead of the config's architectures."""
    example_inputs: ExampleInputs | None = None
    dynamic_batch: bool = False
    trust_code: bool = False
    shown: Path | None = None
    hf: HfExport | None = None
    """The folder the user named (``directory`` is bridge's copy of it): messages name it."""


# --- inspect: load an artifact and read its signature ---------------------------------------


@dataclass(frozen=True)
class InspectResponse:
    signature: Signature
    kind: str
    """For torch files: ``exported_program``, ``torchscript`` or ``pickled_module``; else the format."""
    companions: tuple[str, ...] = ()
    """Files beside the artifact that it needs, relative to its directory (ONNX external data)."""


@dataclass(frozen=True)
class InspectRequest(StepRequest[InspectResponse]):
    task: ClassVar[str] = "inspect"
    response: ClassVar[type[Any]] = InspectResponse
    runner: RunnerSpec
    """The runtime that loads it (from the parent's runner registry)."""
    path: Path
    input_specs: tuple[TensorSpec, ...] | None = None
    trust_pickle: bool = False
    trust_code: bool = False


# --- run: every sample through one representation, then latency --------------------------------


@dataclass(frozen=True)
class RunResponse:
    latency_ns: tuple[int, ...]
    device: str
    runtime: str
    provider: str = ""
    """What actually ran it: onnxruntime's execution provider, TensorFlow's device, ``cpu``."""
    notes: tuple[str, ...] = ()
    model_latency_ns: tuple[int, ...] = ()
    """The model alone, measured inside a server, where `latency_ns` is end to end."""


@dataclass(frozen=True)
class RunRequest(StepRequest[RunResponse]):
    task: ClassVar[str] = "run"
    response: ClassVar[type[Any]] = RunResponse
    runner: RunnerSpec
    """The runtime to run it in (from the parent's runner registry)."""
    path: Path
    device: str
    inputs: Path
    """``.npz`` of feeds keyed by the artifact's input names, ``[samples, *shape]``."""
    outputs: Path
    """Where the child writes ``SAMPLE/OUTPUT_NAME`` arrays."""
    samples: int
    runs: int
    warmup: int
    input_specs: tuple[TensorSpec, ...] | None = None
    factory: str | None = None
    """For the eager source: build the model with this ``package.module:factory`` instead of loading `path`."""
    import_paths: tuple[Path, ...] = ()
    """Directories put first on the child's sys.path to import the factory (the user's working directory)."""
    trust_pickle: bool = False
    trust_code: bool = False
    timing_fd: int | None = None
    """When verify runs representations side by side: the descriptor of its lock file, inherited with a
    shared lock the parent took before starting this child; the child times its runs once it holds
    it exclusively (bridge.steps.TimingTurn)."""

    @property
    def carried_result(self) -> Path:
        """Where a child that runs this beside its own step (HopRequest.source_runs) writes its result envelope."""
        return self.outputs.with_name(self.outputs.name + ".result.json")


# --- capture: one sample with every intermediate tensor kept (localisation) ------------------


@dataclass(frozen=True)
class CaptureRequest(StepRequest[CapturedGraph]):
    """Run one sample through `path` keeping every intermediate tensor; write them to `tensors` (.npz)."""

    task: ClassVar[str] = "capture"
    response: ClassVar[type[Any]] = CapturedGraph
    runner: RunnerSpec
    path: Path
    inputs: Path
    """``.npz`` of feeds keyed by the artifact's input names, ``[samples, *shape]``: the last sample is captured,
    the ones before it are run first, in order, as verify ran them (a stateful artifact remembers them)."""
    tensors: Path
    names: str = ""
    """How to name the tensors: '' the artifact's own names; for a PyTorch program, ``dynamo`` or
    ``dynamo-decomposed``: the names the dynamo ONNX exporter gives the values (its candidate's way)."""
    name_map: Path | None = None
    """The artifact's recorded names for its parent's tensors (the manifest's ``name_map``), when it has one."""
    input_specs: tuple[TensorSpec, ...] | None = None
    trust_pickle: bool = False
    trust_code: bool = False


@dataclass(frozen=True)
class CutResponse:
    signature: Signature
    nodes: int


@dataclass(frozen=True)
class CutRequest(StepRequest[CutResponse]):
    """Write the part of an ONNX model that computes `outputs` from its inputs (bisection)."""

    task: ClassVar[str] = "cut"
    response: ClassVar[type[Any]] = CutResponse
    path: Path
    outputs: tuple[str, ...]
    out_path: Path


# --- embedding sizes -----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingSizesResponse:
    sizes: dict[str, int]


@dataclass(frozen=True)
class EmbeddingSizesRequest(StepRequest[EmbeddingSizesResponse]):
    """For integer inputs of an ONNX model that index a constant table: the table's row count."""

    task: ClassVar[str] = "embedding_sizes"
    response: ClassVar[type[Any]] = EmbeddingSizesResponse
    path: Path


# --- old ONNX opsets ----------------------------------------------------------------------


@dataclass(frozen=True)
class OpsetUpgradeResponse:
    upgrade: OpsetUpgrade | None
    """None: the opset is one the hops read, or it cannot be lowered (`kept`); nothing was written."""
    kept: str = ""
    """Why a source newer than the hops read is kept as it is (the op that blocks lowering it)."""


@dataclass(frozen=True)
class OpsetUpgradeRequest(StepRequest[OpsetUpgradeResponse]):
    """Lift an ONNX file below the runtimes' lowest opset to `target` (or lower one above it), checked (bridge.onnx_opset)."""

    task: ClassVar[str] = "opset_upgrade"
    response: ClassVar[type[Any]] = OpsetUpgradeResponse
    path: Path
    out_path: Path
    target: int


# --- what an ONNX file holds (bridge check) ------------------------------------------------


@dataclass(frozen=True)
class OpUse:
    """One op type as a model uses it: its domain, and how many nodes (subgraphs included)."""

    domain: str
    op_type: str
    count: int


@dataclass(frozen=True)
class OnnxCensus:
    opsets: dict[str, int]
    """Domain ('' for ONNX's) -> the version the model imports."""
    ops: tuple[OpUse, ...]
    """In the order of first use."""
    dtypes: tuple[str, ...]
    """Element types of the graph's inputs, outputs, initializers and inferred values (``float32``, ``int64``)."""
    nodes: int
    local_functions: tuple[str, ...] = ()
    unlowerable: tuple[str, ...] = ()
    """Default-domain ops with no form at the opset the hops read (defaults.ONNX_OPSET): the opset cannot be lowered."""


@dataclass(frozen=True)
class OnnxCensusRequest(StepRequest[OnnxCensus]):
    """List an ONNX file's ops, opsets and element types without running it (bridge.onnx_check)."""

    task: ClassVar[str] = "onnx_census"
    response: ClassVar[type[Any]] = OnnxCensus
    path: Path


# --- zoo export ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooExportResponse:
    model_path: Path
    inputs_path: Path
    note: str = ""
    """Empty, or why torch.export failed and TorchScript was written instead."""


@dataclass(frozen=True)
class ZooExportRequest(StepRequest[ZooExportResponse]):
    """Build zoo model `name` and write it, with its example inputs, into `out_dir`."""

    task: ClassVar[str] = "zoo_export"
    response: ClassVar[type[Any]] = ZooExportResponse
    name: str
    out_dir: Path


# --- the envelope the child writes -------------------------------------------------------------


@dataclass(frozen=True)
class StepError:
    """What a child step ended with, rebuilt into the same BridgeError type in the parent."""

    type: str
    message: str
    stage: str = ""
    detail: str = ""
    traceback: str = ""


REQUESTS: dict[str, type[StepRequest[Any]]] = {
    cls.task: cls
    for cls in (HopRequest, MaterializeRequest, PretrainedRequest, InspectRequest, RunRequest, CaptureRequest, CutRequest,
                EmbeddingSizesRequest, OpsetUpgradeRequest, OnnxCensusRequest, ZooExportRequest)
}
"""Every step, by the task name the child is started with."""
