"""Drift metrics between two sets of outputs in the source's layout, and the pass/fail rule.

An output passes when every element satisfies ``|actual - expected| <= atol + rtol * |expected|``
and neither side holds NaN or Inf. max_rel divides by ``max(|expected|, REL_FLOOR)`` so values
near zero do not explode it (docs/tolerances.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge import defaults
from bridge.defaults import Tolerance
from bridge.signature import invert


@dataclass(frozen=True)
class OutputDrift:
    """How far one output of one representation is from the same output of another."""

    name: str
    max_abs: float
    mean_abs: float
    max_rel: float
    rmse: float
    cosine: float
    top1_agreement: float | None
    top5_overlap: float | None
    nonfinite: str | None
    """``"nan in actual"`` and the like: always a failure."""
    passed: bool
    tolerance: Tolerance
    error: str | None = None
    sqnr_db: float | None = None
    """Signal to noise, 10 log10(sum expected^2 / sum (actual - expected)^2), capped at `SQNR_CAP_DB` (identical)."""
    max_abs_scales: float | None = None
    """A quantized artifact's max abs error in units of its output's int8 scale (1 = one quantization step)."""
    histogram: tuple[int, ...] = ()
    """How many elements' absolute errors fall in each bin of `HISTOGRAM_EDGES` (exact zeros in the first bin,
    anything at or above the last edge in the last): the shape of the drift, which max abs alone does not give."""

    def to_json(self) -> dict[str, Any]:
        def num(v: float | None) -> float | None:
            return None if v is None or not np.isfinite(v) else float(f"{v:.6g}")

        return {
            "name": self.name, "max_abs": num(self.max_abs), "mean_abs": num(self.mean_abs),
            "max_rel": num(self.max_rel), "rmse": num(self.rmse), "cosine": num(self.cosine),
            "top1_agreement": num(self.top1_agreement), "top5_overlap": num(self.top5_overlap),
            "nonfinite": self.nonfinite, "passed": self.passed, "tolerance": self.tolerance.to_json(),
            "error": self.error, "sqnr_db": num(self.sqnr_db), "max_abs_scales": num(self.max_abs_scales),
            "histogram": list(self.histogram),
        }

    def describe(self) -> str:
        if self.error:
            return f"{self.name}: {self.error}"
        if self.nonfinite:
            return f"{self.name}: {self.nonfinite}"
        if self.tolerance.quantized:
            top1 = f", top-1 {self.top1_agreement:.3f} (min {self.tolerance.min_top1:g})" \
                if self.top1_agreement is not None and self.tolerance.min_top1 is not None else ""
            return f"{self.name}: SQNR {self.sqnr_db:.1f} dB (min {self.tolerance.min_sqnr_db:g}){top1}"
        return f"{self.name}: max abs {self.max_abs:.3g} (atol {self.tolerance.atol:g}, rtol {self.tolerance.rtol:g})"


HISTOGRAM_EDGES = tuple(10.0 ** k for k in range(-9, 2))
"""Absolute-error bins, a decade each: [0, 1e-9), [1e-9, 1e-8) ... [1, 10), [10, inf)."""

SQNR_CAP_DB = 200.0
"""SQNR of identical outputs (no noise at all) is reported as this."""


def sqnr_db(expected: NDArray[Any], actual: NDArray[Any]) -> float:
    """10 log10 of the expected outputs' power over the power of the difference, in dB (capped)."""
    signal = float(np.sum(np.square(expected, dtype=np.float64)))
    noise = float(np.sum(np.square(actual.astype(np.float64) - expected)))
    if noise == 0.0:
        return SQNR_CAP_DB
    if signal == 0.0:
        return -SQNR_CAP_DB
    return float(min(SQNR_CAP_DB, 10.0 * np.log10(signal / noise)))


def histogram(diff: NDArray[Any]) -> tuple[int, ...]:
    """Counts of absolute errors per `HISTOGRAM_EDGES` bin (NaN left out)."""
    values = np.asarray(diff, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]  # an infinite error counts in the last bin
    bins = np.searchsorted(np.asarray(HISTOGRAM_EDGES), values, side="right")
    return tuple(int(c) for c in np.bincount(bins, minlength=len(HISTOGRAM_EDGES) + 1))


def _full_perm(perm: tuple[int, ...], leading: int) -> tuple[int, ...]:
    return (*range(leading), *(p + leading for p in perm))


def to_source_layout(array: NDArray[Any], perm: tuple[int, ...], leading: int = 0) -> NDArray[Any]:
    """Undo an artifact tensor's perm (``artifact = source.transpose(perm)``).

    The first `leading` axes (verify's sample axis) stay where they are. An array whose rank does
    not fit `perm` is returned as it is, so the comparison reports the shape mismatch.
    """
    if len(perm) + leading != array.ndim or perm == tuple(range(len(perm))):
        return array
    return array.transpose(invert(_full_perm(perm, leading)))


def from_source_layout(array: NDArray[Any], perm: tuple[int, ...], leading: int = 0) -> NDArray[Any]:
    """Apply an artifact tensor's perm to a source-layout array (the inverse of `to_source_layout`)."""
    if len(perm) + leading != array.ndim or perm == tuple(range(len(perm))):
        return array
    return np.ascontiguousarray(array.transpose(_full_perm(perm, leading)))


def _nonfinite(expected: NDArray[Any], actual: NDArray[Any]) -> str | None:
    found = []
    for label, array in (("expected", expected), ("actual", actual)):
        if np.isnan(array).any():
            found.append(f"NaN in {label}")
        if np.isinf(array).any():
            found.append(f"Inf in {label}")
    return ", ".join(found) or None


def _same_nonfinite(expected: NDArray[Any], actual: NDArray[Any]) -> bool:
    """NaN where the other has NaN, and Inf of the same sign where the other has it, and nowhere else."""
    nan_e, nan_a = np.isnan(expected), np.isnan(actual)
    inf_e, inf_a = np.isinf(expected), np.isinf(actual)
    same_inf = bool(np.all(np.sign(expected[inf_e]) == np.sign(actual[inf_e]))) if inf_e.any() else True
    return bool(np.array_equal(nan_e, nan_a) and np.array_equal(inf_e, inf_a) and same_inf)


def _looks_like_scores(array: NDArray[Any]) -> bool:
    return array.ndim == 2 and array.shape[-1] >= 2 and array.dtype.kind == "f"


def missing_output(name: str, tolerance: Tolerance, error: str) -> OutputDrift:
    """A failed comparison for an output one side does not have."""
    nan = float("nan")
    return OutputDrift(name, nan, nan, nan, nan, nan, None, None, None, False, tolerance, error=error)


def compare_output(name: str, expected: NDArray[Any], actual: NDArray[Any], tolerance: Tolerance, *,
                   same_nonfinite_agrees: bool = False, scale: float | None = None) -> OutputDrift:
    """Metrics for one output over every sample; both arrays are ``[samples, *shape]``; `scale`: the int8 scale
    the actual output is dequantised from, for the max abs in its units.

    NaN or Inf on either side fails, except with `same_nonfinite_agrees` (convert's checks), where
    a NaN or an Inf of the same sign at the same place on both sides agrees: the source computed it.
    """
    if expected.shape != actual.shape:
        return missing_output(name, tolerance, f"shape {list(actual.shape[1:])} does not match {list(expected.shape[1:])}")
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN and Inf are reported, not warned about
        e = expected.astype(np.float64)
        a = actual.astype(np.float64)
        nonfinite = _nonfinite(e, a) if e.dtype.kind == "f" else None
        if nonfinite and same_nonfinite_agrees and _same_nonfinite(e, a):
            nonfinite = None
            keep = np.isfinite(e)
            e, a = np.where(keep, e, 0.0), np.where(keep, a, 0.0)
        finite = np.isfinite(e) & np.isfinite(a)
        diff = np.abs(a - e)[finite] if nonfinite else np.abs(a - e).ravel()
        if diff.size == 0:
            diff = np.zeros(1)
        floor = np.maximum(np.abs(e), defaults.REL_FLOOR)
        rel = (np.abs(a - e) / floor)[finite] if nonfinite else (np.abs(a - e) / floor).ravel()
        ef, af = np.where(finite, e, 0).ravel(), np.where(finite, a, 0).ravel()
        norms = float(np.linalg.norm(ef) * np.linalg.norm(af))
        cosine = float(ef @ af / norms) if norms > 0 else (1.0 if not ef.any() and not af.any() else 0.0)
        top1 = top5 = None
        if _looks_like_scores(expected[0]):
            rows_e = e.reshape(-1, e.shape[-1])
            rows_a = a.reshape(-1, a.shape[-1])
            top1 = float(np.mean(rows_e.argmax(-1) == rows_a.argmax(-1)))
            if rows_e.shape[-1] >= defaults.TOP5:
                k = defaults.TOP5
                te = np.argsort(-rows_e, axis=-1)[:, :k]
                ta = np.argsort(-rows_a, axis=-1)[:, :k]
                top5 = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(te, ta, strict=False)]))
        sqnr = sqnr_db(ef, af)
        if tolerance.quantized:
            assert tolerance.min_sqnr_db is not None
            within = sqnr >= tolerance.min_sqnr_db and (
                top1 is None or tolerance.min_top1 is None or top1 >= tolerance.min_top1)
        else:
            within = bool(np.all(np.abs(a - e)[finite] <= tolerance.atol + tolerance.rtol * np.abs(e)[finite]))
        return OutputDrift(
            name=name, max_abs=float(diff.max()), mean_abs=float(diff.mean()), max_rel=float(rel.max()) if rel.size else 0.0,
            rmse=float(np.sqrt(np.mean(diff**2))), cosine=cosine, top1_agreement=top1, top5_overlap=top5,
            nonfinite=nonfinite, passed=within and nonfinite is None, tolerance=tolerance, sqnr_db=sqnr,
            max_abs_scales=float(diff.max()) / scale if scale else None,
            histogram=histogram(diff),
        )


@dataclass(frozen=True)
class ToleranceRules:
    """The user's overrides: ``--atol``, ``--rtol`` and ``--tol OUTPUT=ATOL``."""

    atol: float | None = None
    rtol: float | None = None
    per_output: Mapping[str, float] | None = None
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    """``--min-sqnr`` and ``--min-top1``: the quantized artifacts' floors (the float tolerances never apply to them)."""

    def for_output(self, name: str, dtype: str) -> Tolerance:
        base = defaults.default_tolerance(dtype)
        if base.quantized:
            if self.min_sqnr_db is None and self.min_top1 is None:
                return base
            return Tolerance(0.0, 0.0, "--min-sqnr/--min-top1",
                             self.min_sqnr_db if self.min_sqnr_db is not None else base.min_sqnr_db,
                             self.min_top1 if self.min_top1 is not None else base.min_top1)
        atol, rtol, source = base.atol, base.rtol, base.source
        if self.atol is not None or self.rtol is not None:
            atol = self.atol if self.atol is not None else atol
            rtol = self.rtol if self.rtol is not None else rtol
            source = "--atol/--rtol"
        if self.per_output and name in self.per_output:
            atol, source = self.per_output[name], f"--tol {name}={self.per_output[name]:g}"
        return Tolerance(atol, rtol, source)
