"""The hop registry: which hops exist, what each needs, its candidates, and how to load it without importing it.

A hop is named by its module and class as strings, so listing hops (``bridge formats``) imports
no framework. Each hop declares, as data, the ordered candidate ways to make its artifact
(`Candidate`): convert tries them in order and keeps the first whose artifact runs and agrees
with its parent (docs/formats.md). Tests may build a registry of their own; `DEFAULT_REGISTRY`
is the one bridge uses.
"""

from __future__ import annotations

import importlib.util
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge.errors import MissingExtraError, UnsupportedRouteError
from bridge.formats import TFJS_INSTALL, Format

if TYPE_CHECKING:
    from bridge.hops.base import Hop


@dataclass(frozen=True)
class Candidate:
    """One way a hop can make its artifact: a name users can pin (``--prefer``, ``--only``) and the settings it applies."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    """Read by the hop's implementation (a backend, an exporter, a decomposition)."""
    applies_to: tuple[str, ...] = ()
    """File suffixes of the parent artifact it applies to (``.pt2``); empty for every file."""


DEFAULT_CANDIDATE = Candidate("default", "the hop's one way")


@dataclass(frozen=True)
class HopSpec:
    """A registered hop: formats, where its code lives, and what it needs installed."""

    src: Format
    dst: Format
    target: str
    """``module:Class`` of the Hop implementation."""
    requires: tuple[str, ...]
    """Importable module names the hop needs."""
    extra: str
    """The pip extra that installs them: ``pip install 'bridge[extra]'``."""
    tool: str
    """The library the hop wraps, as shown to users."""
    preference: int = 0
    """Lower wins when two routes have the same number of hops."""
    distribution: str = ""
    """The pip distribution whose version the manifest records for the artifacts this hop makes."""
    candidates: tuple[Candidate, ...] = (DEFAULT_CANDIDATE,)
    """The ways to make the artifact, in the order they are tried."""
    install: str = ""
    """How to install what is missing, when ``pip install 'bridge[extra]'`` is not the way."""
    preload: tuple[str, ...] = ()
    """Modules the hop's libraries import only on first use (beyond `requires`): its child imports them before
    its request comes (bridge.isolation.Prestarted), while the hop above it still runs."""
    hidden: tuple[str, ...] = ()
    """Installed modules its child cannot import (bridge.isolation._hide): ones its libraries import only to
    offer what the hop does not use."""
    late: tuple[str, ...] = ()
    """Modules of `requires` its child does not import before its request: only some of its candidates use
    them, and those import them when they run."""

    @property
    def modules(self) -> tuple[str, ...]:
        """What the hop's child imports before its request: `requires` but `late`, `preload` and the hop's own module."""
        return (*(m for m in self.requires if m not in self.late), *self.preload, self.target.partition(":")[0])

    @property
    def install_hint(self) -> str:
        return self.install or f"pip install 'bridge[{self.extra}]'"

    def __post_init__(self) -> None:
        if not self.distribution:
            object.__setattr__(self, "distribution", self.tool)
        names = [c.name for c in self.candidates]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"hop {self.name}: candidates need unique names, got {names}")
        if not set(self.late) <= set(self.requires):
            raise ValueError(f"hop {self.name}: late names modules it does not require: {sorted(set(self.late) - set(self.requires))}")

    def candidate(self, name: str) -> Candidate:
        """The candidate called `name`, or an UnsupportedRouteError naming the ones there are."""
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise UnsupportedRouteError(f"hop {self.name} has no candidate {name!r}; it has {', '.join(c.name for c in self.candidates)}")

    @property
    def name(self) -> str:
        return f"{self.src.value}->{self.dst.value}"

    def missing(self) -> tuple[str, ...]:
        """The required modules that are not installed (found without importing them)."""
        return tuple(m for m in self.requires if importlib.util.find_spec(m) is None)

    def load(self) -> Hop:
        """Import and instantiate the hop, or raise MissingExtraError naming what to install."""
        missing = self.missing()
        if missing:
            raise MissingExtraError(
                f"hop {self.name} needs {', '.join(missing)}: {self.install_hint}"
            )
        hop_class = pkgutil.resolve_name(self.target)
        hop: Hop = hop_class()
        return hop


class HopRegistry:
    """An ordered set of hops, at most one per (src, dst) pair."""

    def __init__(self, hops: tuple[HopSpec, ...] = ()) -> None:
        self._hops: dict[tuple[Format, Format], HopSpec] = {}
        for hop in hops:
            self.register(hop)

    def register(self, hop: HopSpec) -> None:
        key = (hop.src, hop.dst)
        if key in self._hops:
            raise ValueError(f"hop {hop.name} is registered twice")
        self._hops[key] = hop

    def get(self, src: Format, dst: Format) -> HopSpec | None:
        return self._hops.get((src, dst))

    def by_name(self, name: str) -> HopSpec:
        """The hop called ``src->dst``, or an UnsupportedRouteError listing the hops there are."""
        for hop in self._hops.values():
            if hop.name == name.replace(" ", ""):
                return hop
        raise UnsupportedRouteError(f"no hop {name!r}; the hops are {', '.join(h.name for h in self)}")

    def from_format(self, src: Format) -> list[HopSpec]:
        return [h for h in self._hops.values() if h.src == src]

    def __iter__(self) -> Iterator[HopSpec]:
        return iter(self._hops.values())

    def __len__(self) -> int:
        return len(self._hops)


_TORCH = ("torch", "onnxscript")

_TORCH_TO_ONNX = (
    Candidate("dynamo", "torch.onnx.export(dynamo=True) of the ExportedProgram or module", {"exporter": "dynamo"}),
    Candidate("dynamo-decomposed", "the same after ExportedProgram.run_decompositions(): RNNs and other composite "
              "ops lowered to elementwise ops before export (an ExportedProgram only)", {"exporter": "dynamo", "decompose": True},
              applies_to=(".pt2",)),
    Candidate("torchscript", "torch.onnx.export(dynamo=False), the TorchScript exporter (a .pt2 through its module)",
              {"exporter": "torchscript"}),
)
_ONNX2TF_BACKENDS = (
    Candidate("flatbuffer_direct", "onnx2tf's flatbuffer_direct backend", {"backend": "flatbuffer_direct"}),
    Candidate("tf_converter", "onnx2tf's tf_converter backend (TensorFlow's own converter)", {"backend": "tf_converter"}),
)
_LARGE_WEIGHTS = Candidate(
    "large_weights", "flatbuffer_direct on a copy whose large weights are graph inputs, the weights then written into "
    "the artifact (TFLite buffers placed by offset, SavedModel variables): memory close to the weights' size. Tried "
    "first for weights of 1 GiB or more (BRIDGE_LARGE_WEIGHTS), otherwise only when named",
    {"backend": "flatbuffer_direct", "large_weights": True})
_ONNX_TO_TFLITE = (
    _LARGE_WEIGHTS,
    *_ONNX2TF_BACKENDS,
    Candidate("saved_model", "onnx2tf's SavedModel, then TensorFlow's TFLiteConverter.from_saved_model",
              {"backend": "flatbuffer_direct", "via_saved_model": True}),
)
_ONNX_TO_TF = (
    _LARGE_WEIGHTS,
    *_ONNX2TF_BACKENDS,
    Candidate("batch_free_reshape", "flatbuffer_direct on a copy whose Reshape targets built from an input's batch size "
              "(Shape -> Concat, as torch.onnx writes x.view(x.size(0), -1)) use -1 instead",
              {"backend": "flatbuffer_direct", "batch_free_reshape": True}),
    Candidate("static_shapes", "flatbuffer_direct on a copy with every symbolic input dimension fixed to 1 and the "
              "shape arithmetic folded (onnxsim): the SavedModel takes that shape only",
              {"backend": "flatbuffer_direct", "static_shapes": True}),
)
_ONNX_TO_TORCH = (
    Candidate("export", "onnx2torch, saved with torch.export (.pt2)", {"save": "export"}),
    Candidate("trace", "onnx2torch, saved with torch.jit.trace (TorchScript .pt)", {"save": "trace"}),
)
_ONNX2TF = ("onnx2tf", "tensorflow", "onnx")
# TensorFlow imports jax whenever it is installed (tensorflow/lite/python/util.py, for tf.lite's jax
# converter): 1.2 s of each import. The hops that run TensorFlow on an ONNX, SavedModel or TFLite
# file never use it (the Keras hops are left alone: a Keras model may carry a Lambda that does).
_NOT_JAX = ("jax",)
# onnx2tf's flatbuffer_direct backend writes TFLite without TensorFlow: onnx -> tflite's first candidate never
# imports it (2-3 s of CPU beside the hop above, on a small machine); its SavedModel and tf_converter ones, and
# quantization, do, when they run.
_TENSORFLOW = ("tensorflow",)
# onnx2tf imports its converter, its flatbuffer writer and the runtimes it checks with inside convert(): ~0.7 s.
_ONNX2TF_PRELOAD = ("onnx2tf.onnx2tf", "onnx2tf.tflite_builder.lower_from_onnx2tf", "onnxruntime",
                    "ai_edge_litert.interpreter", "sng4onnx")
# torch.export.load and torch.onnx.export import sympy, torch._dynamo, onnxscript and onnx_ir on first use: ~2 s.
_TORCH_PRELOAD = ("torch.export", "torch._export.serde.serialize", "torch.onnx._internal.exporter._core",
                  "onnxscript.function_libs.torch_lib.ops")
_TF2ONNX = ("tf2onnx", "tensorflow", "onnx")

DEFAULT_REGISTRY = HopRegistry(
    (
        HopSpec(Format.TORCH, Format.ONNX, "bridge.hops.torch_to_onnx:TorchToOnnx", _TORCH, "torch", "torch.onnx",
                distribution="torch", candidates=_TORCH_TO_ONNX, preload=_TORCH_PRELOAD),
        # A JAX source reaches TFLite through jax2tf's SavedModel rather than through ONNX: TensorFlow's converter
        # lowers the StableHLO to builtin ops in the JAX layout, where onnx2tf would make an NHWC image input NCHW-
        # shaped (docs/jax.md). That SavedModel holds an XlaCallModule op, which tf2onnx cannot read: ONNX comes
        # from jax2onnx (jax -> onnx costs 1 in ties).
        HopSpec(Format.JAX, Format.TF, "bridge.hops.jax_to_tf:JaxToTf", ("jax", "tensorflow"), "jax", "jax2tf",
                distribution="jax"),
        HopSpec(Format.JAX, Format.ONNX, "bridge.hops.jax_to_onnx:JaxToOnnx", ("jax2onnx", "jax", "onnx"), "jax", "jax2onnx",
                preference=1),
        HopSpec(Format.ONNX, Format.TFLITE, "bridge.hops.onnx_to_tflite:OnnxToTflite", _ONNX2TF, "tf", "onnx2tf",
                candidates=_ONNX_TO_TFLITE, preload=_ONNX2TF_PRELOAD, hidden=_NOT_JAX, late=_TENSORFLOW),
        HopSpec(Format.ONNX, Format.TF, "bridge.hops.onnx_to_tf:OnnxToTf", _ONNX2TF, "tf", "onnx2tf",
                candidates=_ONNX_TO_TF, preload=_ONNX2TF_PRELOAD, hidden=_NOT_JAX),
        HopSpec(Format.ONNX, Format.KERAS, "bridge.hops.onnx_to_keras:OnnxToKeras", (*_ONNX2TF, "tf_keras"), "tf", "onnx2tf"),
        HopSpec(Format.ONNX, Format.TORCH, "bridge.hops.onnx_to_torch:OnnxToTorch", ("onnx2torch", "torch", "onnx"),
                "torch", "onnx2torch", candidates=_ONNX_TO_TORCH),
        HopSpec(Format.TF, Format.ONNX, "bridge.hops.tf_to_onnx:TfToOnnx", _TF2ONNX, "tf", "tf2onnx", hidden=_NOT_JAX),
        HopSpec(Format.KERAS, Format.ONNX, "bridge.hops.keras_to_onnx:KerasToOnnx", _TF2ONNX, "tf", "tf2onnx",
                preference=1),
        HopSpec(Format.KERAS, Format.TF, "bridge.hops.keras_to_tf:KerasToTf", ("tensorflow", "keras"), "tf", "keras"),
        HopSpec(Format.TFLITE, Format.ONNX, "bridge.hops.tflite_to_onnx:TfliteToOnnx", _TF2ONNX, "tf", "tf2onnx",
                hidden=_NOT_JAX),
        HopSpec(Format.TF, Format.TF_SERVING, "bridge.hops.tf_to_tf_serving:TfToTfServing",
                ("tensorflow", "tensorflow_serving"), "serving", "tensorflow-serving-api"),
        HopSpec(Format.TORCH, Format.TORCHSERVE, "bridge.hops.torch_to_torchserve:TorchToTorchServe",
                ("torch", "model_archiver"), "serving", "torch-model-archiver"),
        # A deployed package back to its model, so it can be verified against other formats (it runs as the source).
        HopSpec(Format.TF_SERVING, Format.TF, "bridge.hops.tf_serving_to_tf:TfServingToTf", ("tensorflow",), "tf", "bridge"),
        HopSpec(Format.TORCHSERVE, Format.TORCH, "bridge.hops.torchserve_to_torch:TorchServeToTorch", ("torch",), "torch",
                "bridge"),
        HopSpec(Format.TF, Format.TFJS, "bridge.hops.tf_to_tfjs:TfToTfjs", ("tensorflowjs", "tensorflow", "tensorflow_hub"),
                "tfjs", "tensorflowjs", install=TFJS_INSTALL),
        # A Keras source reaches TFLite through its own SavedModel (keras -> tf -> tflite) rather
        # than through ONNX, which would add two layout changes: keras -> onnx costs 1 in ties.
        HopSpec(Format.TF, Format.TFLITE, "bridge.hops.tf_to_tflite:TfToTflite", ("tensorflow",), "tf",
                "tf.lite.TFLiteConverter", distribution="tensorflow"),
    )
)
