"""Joining a parent's tensors to a child's, and measuring one pair in the parent's layout.

A pair is found, in order of trust: the graph inputs and outputs by signature (their layouts are
recorded in the manifest), a rename the converter recorded (`CapturedGraph.aliases`), the same
name; and where a converter keeps no names, by value: the child tensor of the same size whose
sorted values (a fingerprint that no transpose or reshape changes) are closest. A child tensor is
brought to the parent's layout the way a converter moves it: as it is, channels last (or first),
or reshaped when only unit axes differ; where several fit, the closest is the one meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge.localization.graph import CapturedGraph, TensorReader

SAME, CHANNELS_LAST, CHANNELS_FIRST, RESHAPED = "same", "channels-last", "channels-first", "reshaped"
_FINGERPRINT_POINTS = np.linspace(0.0, 1.0, 17)
_VALUE_CANDIDATES = 3
"""Child tensors measured in full per parent tensor when joining by value (the closest fingerprints)."""
NAME_COVERAGE = 0.2
"""Below this share of the parent's tensors joined by name, the hop is joined by value."""


@dataclass(frozen=True)
class Measure:
    """One parent tensor against one child tensor, in the parent's layout."""

    target: str
    max_abs: float
    max_rel: float
    over: float
    """max over elements of ``|a - e| / (atol + rtol |e|)``: above 1 is over tolerance."""
    layout: str


def as_float(array: NDArray[Any]) -> NDArray[np.float64]:
    return np.asarray(array, dtype=np.float64)


def measure(expected: NDArray[Any], actual: NDArray[Any], atol: float, rtol: float, target: str,
            layouts: Sequence[str] = (SAME, CHANNELS_LAST, CHANNELS_FIRST, RESHAPED)) -> Measure | None:
    """`actual` (the child's) against `expected` (the parent's) in the first fitting layout that is closest."""
    if expected.size != actual.size:
        return None
    e = as_float(expected)
    best: Measure | None = None
    for layout in layouts:
        moved = move_to(actual, expected.shape, layout)
        if moved is None:
            continue
        a = as_float(moved)
        with np.errstate(invalid="ignore", over="ignore"):
            finite = np.isfinite(a) & np.isfinite(e)
            diff = np.abs(a - e)
            if not finite.all():  # the same NaN or infinity in both agrees; any other is infinitely far
                same = (np.isnan(a) & np.isnan(e)) | (a == e)
                diff = np.where(finite, diff, np.where(same, 0.0, np.inf))
            bound = atol + rtol * np.where(finite, np.abs(e), 0.0)
            ratio = np.where(bound > 0, diff / np.where(bound > 0, bound, 1.0), np.where(diff > 0, np.inf, 0.0))
            over = float(np.max(ratio, initial=0.0))
            max_abs = float(np.max(diff, initial=0.0))
            max_rel = float(np.max(np.where(finite, diff / np.maximum(np.abs(np.where(finite, e, 1.0)), 1e-12), diff),
                                   initial=0.0))
        found = Measure(target, max_abs, max_rel, over, layout)
        if best is None or found.over < best.over:
            best = found
        if best.over <= 1.0:
            break
    return best


def move_to(actual: NDArray[Any], shape: tuple[int, ...], layout: str) -> NDArray[Any] | None:
    rank = actual.ndim
    if layout == SAME:
        return actual if actual.shape == shape else None
    if layout == CHANNELS_LAST and rank >= 3 and len(shape) == rank:
        # the child holds the parent's NCHW tensor as NHWC: bring channels back to axis 1
        moved = np.moveaxis(actual, -1, 1)
        return moved if moved.shape == shape else None
    if layout == CHANNELS_FIRST and rank >= 3 and len(shape) == rank:
        moved = np.moveaxis(actual, 1, -1)
        return moved if moved.shape == shape else None
    if layout == RESHAPED:
        squeezed = tuple(d for d in shape if d != 1)
        return actual.reshape(shape) if tuple(d for d in actual.shape if d != 1) == squeezed else None
    return None


def name_pairs(parent: CapturedGraph, child: CapturedGraph) -> dict[str, str]:
    """Parent tensor -> child tensor, by a rename the converter recorded or by the same name."""
    pairs: dict[str, str] = {}
    for node in parent.nodes:
        for tensor in node.outputs:
            for name in (child.aliases.get(tensor), tensor, tensor.replace(":", "__")):
                if name and name in child.keys:
                    pairs[tensor] = name
                    break
    return pairs


def fingerprint(array: NDArray[Any]) -> NDArray[np.float64] | None:
    """Sorted values at fixed quantiles: the same whatever the layout."""
    if array.dtype.kind not in "fiub" or array.size < 2:
        return None
    values = as_float(array).reshape(-1)
    if not np.all(np.isfinite(values)):
        values = values[np.isfinite(values)]
        if values.size < 2:
            return None
    return np.asarray(np.quantile(values, _FINGERPRINT_POINTS), dtype=np.float64)


class ValueIndex:
    """The child's tensors by size, with their fingerprints (each read once)."""

    def __init__(self, child: CapturedGraph, reader: TensorReader, skip: Iterable[str] = ()) -> None:
        self.reader = reader
        self.by_size: dict[int, list[tuple[str, NDArray[np.float64]]]] = {}
        skipped = set(skip)
        for name in child.keys:
            if name in skipped:
                continue
            array = reader.get(name)
            if array is None:
                continue
            prints = fingerprint(array)
            if prints is not None:
                self.by_size.setdefault(int(array.size), []).append((name, prints))

    def closest(self, expected: NDArray[Any], atol: float, rtol: float) -> Measure | None:
        """The child tensor of `expected`'s size closest to it, measured in full for the few nearest fingerprints."""
        prints = fingerprint(expected)
        candidates = self.by_size.get(int(expected.size), [])
        if prints is None or not candidates:
            return None
        scale = atol + rtol * float(np.max(np.abs(prints)))
        ranked = sorted(candidates, key=lambda item: float(np.max(np.abs(item[1] - prints))) / max(scale, 1e-12))
        best: Measure | None = None
        for name, _ in ranked[:_VALUE_CANDIDATES]:
            actual = self.reader.get(name)
            found = measure(expected, actual, atol, rtol, name) if actual is not None else None
            if found is not None and (best is None or found.over < best.over):
                best = found
        return best
