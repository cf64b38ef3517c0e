"""The formats bridge converts between: one `FormatSpec` each, the only place a format is described.

A spec says what the format is called, how a path is recognised as one, how its artifact is laid
out in an output directory, and which runtimes can run it (`RunnerSpec`, in order of preference:
the first is the one other artifacts are compared against). Adding a format is: an enum member
and its spec here, its hops (bridge/hops/ and bridge/registry.py), and its runners
(bridge/runtimes/). Nothing here imports a framework.
"""

from __future__ import annotations

import enum
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import InputError


class Format(str, enum.Enum):
    """A model representation. The value is the name used by ``--to`` and ``--from``."""

    TORCH = "torch"
    JAX = "jax"
    ONNX = "onnx"
    TF = "tf"
    KERAS = "keras"
    TFLITE = "tflite"
    TFJS = "tfjs"
    TF_SERVING = "tf-serving"
    TORCHSERVE = "torchserve"

    def __str__(self) -> str:
        return self.value

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self]

    @property
    def description(self) -> str:
        return FORMATS[self].description

    @classmethod
    def parse(cls, name: str | Format) -> Format:
        """The format called `name`, or an InputError listing the valid names."""
        if isinstance(name, Format):
            return name
        try:
            return cls(name.strip().lower())
        except ValueError:
            valid = ", ".join(f.value for f in cls)
            raise InputError(f"unknown format {name!r}: use one of {valid}") from None


@dataclass(frozen=True)
class RunnerSpec:
    """A runtime that can run one format: where its Runner lives and what it needs installed.

    `target` is ``module:Class`` so that listing runners imports no framework.
    """

    format: Format
    runtime: str
    """The name shown in reports: ``onnxruntime``, ``litert``, ``tensorflow``."""
    target: str
    requires: tuple[str, ...]
    """Importable module names the runner needs."""
    extra: str
    """The pip extra that installs them."""
    distribution: str
    """The pip distribution whose version the report records."""
    devices: tuple[str, ...] = ("cpu",)
    """The devices this runtime can ever use (whether one is present is asked at run time)."""
    capture: str | None = None
    """``module:function`` that runs one sample keeping every intermediate tensor (localisation), or None."""
    check: str | None = None
    """``module:function`` returning what else is missing that is not a Python module (a program, npm packages)."""
    install: str = ""
    """How to install what is missing, when ``pip install 'bridge[extra]'`` is not the way."""
    hidden: tuple[str, ...] = ()
    """Installed modules a run's child cannot import (bridge.isolation._hide): ones the runtime imports
    only to offer what running the artifact does not use."""

    @property
    def key(self) -> tuple[Format, str]:
        return (self.format, self.runtime)

    @property
    def modules(self) -> tuple[str, ...]:
        """What a run's child imports before its request (bridge.isolation.Prestarted): `requires` and the runner's module."""
        return (*self.requires, self.target.partition(":")[0])

    @property
    def install_hint(self) -> str:
        return self.install or f"pip install 'bridge[{self.extra}]'"

    def missing(self) -> tuple[str, ...]:
        """The required modules that are not installed (found without importing them), and what `check` reports."""
        modules = tuple(m for m in self.requires if importlib.util.find_spec(m) is None)
        if self.check is None:
            return modules
        import pkgutil

        return (*modules, *pkgutil.resolve_name(self.check)())


@dataclass(frozen=True)
class FormatSpec:
    """Everything bridge knows about one format."""

    format: Format
    description: str
    artifact_name: str
    """The file or directory name of this format's artifact inside ``DIR/<format>/``."""
    suffixes: tuple[str, ...] = ()
    """File suffixes that identify the format (lower case, with the dot)."""
    marker: str | None = None
    """For a directory format: the file whose presence inside identifies it."""
    recogniser: str | None = None
    """For a directory format without one marker file: ``module:function(path) -> bool`` (imports no framework)."""
    runners: tuple[RunnerSpec, ...] = ()
    in_all: bool = True
    """Whether ``--to all`` makes it. A deployment form (TF.js) and a target that repeats another's graph (Keras:
    onnx2tf's model, whose SavedModel ``all`` makes) are made when named (``--to all,keras,tfjs``)."""

    @property
    def is_directory(self) -> bool:
        return self.marker is not None or self.recogniser is not None

    def recognises(self, path: Path) -> bool:
        """Whether `path` (which exists) is in this format, judged by its name and, for directories, its contents."""
        if path.is_dir():
            if self.recogniser is not None:
                import pkgutil

                return bool(pkgutil.resolve_name(self.recogniser)(path))
            return self.marker is not None and (path / self.marker).is_file()
        return path.suffix.lower() in self.suffixes


TFJS_INSTALL = ("bash .ci/setup does it; by hand: pip install --no-deps tensorflowjs==4.22.0 tensorflow-hub==0.16.1 "
                "(their declared dependencies conflict with the pinned TensorFlow) and npm ci --prefix bridge/runtimes/tfjs")
TF_SERVING_INSTALL = ("tensorflow_model_server is not pip-installable: install TF Serving's Debian package "
                      "(tensorflow-model-server) or run its Docker image, and put the binary on PATH")
_TORCH_REQ = ("torch",)
_ORT_REQ = ("onnxruntime", "onnx")
_TF_REQ = ("tensorflow",)

FORMATS: dict[Format, FormatSpec] = {
    spec.format: spec
    for spec in (
        FormatSpec(
            Format.TORCH,
            "PyTorch: nn.Module (package.module:factory), TorchScript .pt, ExportedProgram .pt2",
            artifact_name="model.pt2",
            suffixes=(".pt2", ".pt", ".pth"),
            runners=(RunnerSpec(Format.TORCH, "torch", "bridge.runtimes.torch_runner:TorchRunner", _TORCH_REQ,
                                "torch", "torch", ("cpu", "cuda"), capture="bridge.runtimes.torch_capture:capture"),),
        ),
        FormatSpec(
            Format.JAX,
            "JAX function exported with jax.export .jaxexport (StableHLO; built from package.module:factory)",
            artifact_name="model.jaxexport",
            suffixes=(".jaxexport",),
            runners=(RunnerSpec(Format.JAX, "jax", "bridge.runtimes.jax_runner:JaxRunner", ("jax",), "jax", "jax",
                                ("cpu", "cuda")),),
        ),
        FormatSpec(
            Format.ONNX,
            "ONNX model .onnx (external data kept inside its directory)",
            artifact_name="model.onnx",
            suffixes=(".onnx",),
            runners=(RunnerSpec(Format.ONNX, "onnxruntime", "bridge.runtimes.onnxruntime_runner:OnnxruntimeRunner",
                                _ORT_REQ, "torch", "onnxruntime", ("cpu", "cuda"),
                                capture="bridge.runtimes.onnx_capture:capture"),),
        ),
        FormatSpec(
            Format.TF,
            "TensorFlow SavedModel directory with a serving_default signature",
            artifact_name="saved_model",
            marker="saved_model.pb",
            runners=(RunnerSpec(Format.TF, "tensorflow", "bridge.runtimes.tensorflow_runner:SavedModelRunner", _TF_REQ,
                                "tf", "tensorflow", ("cpu", "cuda"), capture="bridge.runtimes.tensorflow_capture:capture",
                                # TensorFlow imports jax whenever it is installed (for tf.lite's jax converter): 1.2 s
                                hidden=("jax",)),),
        ),
        FormatSpec(
            Format.KERAS,
            "Keras 3 model .keras",
            artifact_name="model.keras",
            suffixes=(".keras", ".h5"),
            runners=(RunnerSpec(Format.KERAS, "keras", "bridge.runtimes.tensorflow_runner:KerasRunner",
                                (*_TF_REQ, "keras"), "tf", "keras", ("cpu", "cuda"),
                                capture="bridge.runtimes.tensorflow_capture:capture_keras"),),
            in_all=False,
        ),
        FormatSpec(
            Format.TFLITE,
            "TFLite flatbuffer .tflite (float32; --fp16 also writes float16)",
            artifact_name="model.tflite",
            suffixes=(".tflite",),
            # LiteRT's GPU delegate is a mobile one: on a server it runs on the CPU only.
            runners=(RunnerSpec(Format.TFLITE, "litert", "bridge.runtimes.tflite_runner:TfliteRunner",
                                ("ai_edge_litert",), "tf", "ai-edge-litert",
                                capture="bridge.runtimes.tflite_capture:capture"),),
        ),
        FormatSpec(
            Format.TFJS,
            "TF.js graph model directory (model.json + weight shards), run in Node.js on TF.js's CPU and WebAssembly backends",
            artifact_name="graph_model",
            marker="model.json",
            runners=tuple(
                RunnerSpec(Format.TFJS, f"node-{backend}", f"bridge.runtimes.tfjs_runner:Node{backend.capitalize()}Runner", (),
                           "tfjs", "tensorflowjs", check="bridge.runtimes.tfjs_runner:missing", install=TFJS_INSTALL)
                for backend in ("cpu", "wasm")),
            in_all=False,
        ),
        FormatSpec(
            Format.TF_SERVING,
            "TF Serving model directory (NAME/VERSION/ SavedModel with warm-up records), run through its serve tag and "
            "serving_default signature, and by tensorflow_model_server over REST where it is installed",
            artifact_name="model",
            recogniser="bridge.runtimes.serving_layout:is_tf_serving_dir",
            runners=(
                RunnerSpec(Format.TF_SERVING, "serving-signature", "bridge.runtimes.tf_serving_runner:ServingSignatureRunner",
                           (*_TF_REQ, "tensorflow_serving"), "serving", "tensorflow-serving-api", ("cpu", "cuda")),
                RunnerSpec(Format.TF_SERVING, "tf-serving-rest", "bridge.runtimes.tf_serving_runner:TfServingRestRunner",
                           ("tensorflow_serving",), "serving", "tensorflow-serving-api",
                           check="bridge.runtimes.tf_serving_runner:missing_server", install=TF_SERVING_INSTALL),
            ),
            in_all=False,
        ),
        FormatSpec(
            Format.TORCHSERVE,
            "TorchServe model archive .mar (torch-model-archiver, with a handler bridge generates), served by a real "
            "TorchServe on 127.0.0.1",
            artifact_name="model.mar",
            suffixes=(".mar",),
            runners=(RunnerSpec(Format.TORCHSERVE, "torchserve", "bridge.runtimes.torchserve_runner:TorchServeRunner",
                                ("ts", *_TORCH_REQ), "serving", "torchserve",
                                check="bridge.runtimes.torchserve_runner:missing"),),
            in_all=False,
        ),
    )
}

_missing_specs = [f.value for f in Format if f not in FORMATS]
if _missing_specs:  # a format without a spec is a programming error, caught at import
    raise RuntimeError(f"formats without a FormatSpec: {', '.join(_missing_specs)}")


def detect(path: Path) -> Format:
    """The format of the model at `path`, from its name and, for directories, its contents."""
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    found = [spec.format for spec in FORMATS.values() if spec.recognises(path)]
    if found:
        return found[0]
    if path.is_dir():
        markers = " or ".join(s.marker for s in FORMATS.values() if s.marker)
        raise InputError(
            f"{path}: a directory but not a SavedModel or another model directory (no {markers} inside, "
            "nor TF Serving's VERSION/saved_model.pb); "
            "point at a model directory or a model file"
        )
    known = ", ".join(sorted(s for spec in FORMATS.values() for s in spec.suffixes))
    raise InputError(
        f"{path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
        f"rename it to one of {known} or pass --from"
    )
