"""Every default and tolerance in one place (documented in docs/tolerances.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass

# --- convert -------------------------------------------------------------------------------
ONNX_OPSET = 18
"""The opset torch.onnx's dynamo exporter targets; onnx2tf and onnxruntime 1.26 support it."""
MIN_SOURCE_OPSET = 7
"""onnxruntime has no kernel below opset 7: an older ONNX source is lifted to ONNX_OPSET first (bridge.onnx_opset)."""
TORCHSCRIPT_MAX_OPSET = 20
ONNX2TORCH_MAX_OPSET = 17
"""onnx2torch 1.5.15 lacks some converters past 17 (ReduceMean at 18); older opsets are converted first."""
ONNX2TORCH_MIN_OPSET = 11
"""Below it onnx2torch lacks converters for common ops (Dropout-7): the onnx -> torch hop lifts such a model to the max."""
TF2ONNX_OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
"""Weights at or over this many bytes go to ONNX external data (protobuf's limit is 2 GiB)."""
LARGE_WEIGHTS = 1024**3
"""At or over this many bytes of weights, the onnx2tf hops try their ``large_weights`` candidate first (bridge/hops/
large_weights.py) and leave it out below, unless --only or --prefer names it."""


CHECK_SAMPLES = 2
"""Samples each artifact is run on as it is made (convert's checks); verify uses SAMPLES."""
CHECK_SEED = 0
CHECK_NICE = 5
"""Checks run at a lower CPU priority than the hops beside them: the hops are the critical path."""
CHECK_INT_HIGH = 2
"""Integer inputs of the checks are 0 or 1: inside any embedding table, before any ONNX artifact
exists to read its size from (verify reads it and uses the whole range)."""


def parallel_steps() -> int:
    """How many child steps (hops and checks) convert runs at once: one per core, BRIDGE_PARALLEL_STEPS overrides."""
    return max(1, int(os.environ.get("BRIDGE_PARALLEL_STEPS") or os.cpu_count() or 1))


def parallel_runs() -> int:
    """How many representations verify runs at once, memory allowing: one per core and one more, since each
    spends part of its life idle, waiting for its turn to be timed alone (bridge.steps.TimingTurn); the
    one more loads its model meanwhile. BRIDGE_PARALLEL_STEPS sets the number itself (1: one at a time)."""
    if os.environ.get("BRIDGE_PARALLEL_STEPS"):
        return parallel_steps()
    return (os.cpu_count() or 1) + 1


def external_data_threshold() -> int:
    """The external data threshold; BRIDGE_EXTERNAL_DATA_THRESHOLD lowers it (tests use this)."""
    return int(os.environ.get("BRIDGE_EXTERNAL_DATA_THRESHOLD", EXTERNAL_DATA_THRESHOLD))


def large_weights_threshold() -> int:
    """The large-weight threshold; BRIDGE_LARGE_WEIGHTS lowers it (tests use this)."""
    return int(os.environ.get("BRIDGE_LARGE_WEIGHTS", LARGE_WEIGHTS))


# --- verify --------------------------------------------------------------------------------
SEED = 0
SAMPLES = 8
WARMUP_RUNS = 3
LATENCY_RUNS = 20
INT_HIGH = 100
"""Exclusive upper bound for generated integer inputs when the model does not say."""
REL_FLOOR = 1e-3
"""max_rel divides by max(|reference|, REL_FLOOR) so near-zero references do not explode it."""
TOP5 = 5


@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= atol + rtol * |expected|, elementwise; or, for a quantized artifact, floors on the
    signal-to-quantization-noise ratio and on top-1 agreement (`min_sqnr_db` set: atol and rtol do not apply)."""

    atol: float
    rtol: float
    source: str = "default"
    """Where the tolerance came from: ``default float32``, ``--atol``, ``--tol logits=...``, ``default int8``."""
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    """Where the output looks like class scores: the share of samples whose top class agrees, at least."""

    @property
    def quantized(self) -> bool:
        return self.min_sqnr_db is not None

    def to_json(self) -> dict[str, float | str | None]:
        if self.quantized:
            return {"atol": self.atol, "rtol": self.rtol, "source": self.source, "min_sqnr_db": self.min_sqnr_db,
                    "min_top1": self.min_top1}
        return {"atol": self.atol, "rtol": self.rtol, "source": self.source}


TOLERANCES = {
    "float32": Tolerance(1e-4, 1e-3, "default float32"),
    "float16": Tolerance(1e-2, 1e-2, "default float16"),
    # About 20 units of roundoff of the type, as float16's 1e-2 is (2^-11 * 20): bfloat16 keeps 8 bits, 2^-8 * 20.
    "bfloat16": Tolerance(8e-2, 8e-2, "default bfloat16"),
    "float64": Tolerance(1e-6, 1e-5, "default float64"),
}
INTEGER_TOLERANCE = Tolerance(0.0, 0.0, "default integer (exact)")
UPGRADE_TOLERANCE = Tolerance(1e-5, 1e-4, "opset upgrade")
"""An old ONNX file lifted to a newer opset against the original (the same float32 maths in two runtimes)."""
QUANTIZED_TOLERANCES = {
    "dynamic": Tolerance(0.0, 0.0, "default dynamic (quantized)", min_sqnr_db=20.0, min_top1=0.95),
    "int8": Tolerance(0.0, 0.0, "default int8 (quantized)", min_sqnr_db=15.0, min_top1=0.9),
    "int8-io": Tolerance(0.0, 0.0, "default int8-io (quantized)", min_sqnr_db=15.0, min_top1=0.9),
}
"""A quantized artifact against its float parent (docs/quantization.md says how these were chosen)."""


QUANTIZE_SCHEMES = ("dynamic", "int8", "int8-io", "fp16")
"""``--quantize``: dynamic-range (int8 weights, float activations), static int8 with float inputs and outputs,
static int8 inputs and outputs too (TFLite), float16."""
QUANTIZE_FORMAT_SCHEMES = {"tflite": ("dynamic", "int8", "int8-io", "fp16"), "onnx": ("dynamic", "int8", "fp16")}
CALIBRATION_SAMPLES = 64
"""Samples generated when no --calibration file is given (int8 accuracy is then not meaningful)."""
MIN_CALIBRATION_SAMPLES = 8
"""Fewer calibration samples than this is refused: the ranges would be a guess."""
QUANTIZED_LAYERS = 5
"""Verify names this many operations that lose the most to quantization, per quantized artifact."""


def combined_precision(*precisions: str) -> str:
    """The precision a comparison between artifacts of these precisions is judged at: the first not float32."""
    return next((p for p in precisions if p != "float32"), "float32")


def quantized_precision(scheme: str) -> str:
    """The precision a scheme's artifact records (and its key's suffix): ``fp16`` is ``float16``."""
    return "float16" if scheme == "fp16" else scheme


def default_tolerance(dtype: str) -> Tolerance:
    """The tolerance for an output of this dtype, or of this quantized precision (``int8``, ``dynamic``)."""
    if dtype in QUANTIZED_TOLERANCES:
        return QUANTIZED_TOLERANCES[dtype]
    if dtype in TOLERANCES:
        return TOLERANCES[dtype]
    if dtype.startswith(("int", "uint", "bool")):
        return INTEGER_TOLERANCE
    return TOLERANCES["float32"]

LOCALIZE_TOP = 10
"""Operations listed by drift added in a localisation (``--top``)."""
BISECT_MAX_STEPS = 12
"""Bisection steps at most (``--max-steps``): 2**12 operations are searched to one."""
