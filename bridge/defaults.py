"""Every default and tolerance in one place (documented in docs/tolerances.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass

# --- convert -------------------------------------------------------------------------------
ONNX_OPSET = 18
"""The opset torch.onnx's dynamo exporter targets; onnx2tf and onnxruntime 1.26 support it."""
TORCHSCRIPT_MAX_OPSET = 20
ONNX2TORCH_MAX_OPSET = 17
"""onnx2torch 1.5.15 lacks some converters past 17 (ReduceMean at 18); older opsets are converted first."""
TF2ONNX_OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2_000_000_000
"""Weights at or over this many bytes go to ONNX external data (protobuf's limit is 2 GiB)."""


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


def external_data_threshold() -> int:
    """The external data threshold; BRIDGE_EXTERNAL_DATA_THRESHOLD lowers it (tests use this)."""
    return int(os.environ.get("BRIDGE_EXTERNAL_DATA_THRESHOLD", EXTERNAL_DATA_THRESHOLD))


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
    """|actual - expected| <= atol + rtol * |expected|, elementwise."""

    atol: float
    rtol: float
    source: str = "default"
    """Where the tolerance came from: ``default float32``, ``--atol``, ``--tol logits=...``."""

    def to_json(self) -> dict[str, float | str]:
        return {"atol": self.atol, "rtol": self.rtol, "source": self.source}


TOLERANCES = {
    "float32": Tolerance(1e-4, 1e-3, "default float32"),
    "float16": Tolerance(1e-2, 1e-2, "default float16"),
    "float64": Tolerance(1e-6, 1e-5, "default float64"),
}
INTEGER_TOLERANCE = Tolerance(0.0, 0.0, "default integer (exact)")


def default_tolerance(dtype: str) -> Tolerance:
    if dtype in TOLERANCES:
        return TOLERANCES[dtype]
    if dtype.startswith(("int", "uint", "bool")):
        return INTEGER_TOLERANCE
    return TOLERANCES["float32"]

LOCALIZE_TOP = 10
"""Operations listed by drift added in a localisation (``--top``)."""
BISECT_MAX_STEPS = 12
"""Bisection steps at most (``--max-steps``): 2**12 operations are searched to one."""
