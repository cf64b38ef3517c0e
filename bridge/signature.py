"""Typed descriptions of a model's inputs and outputs, shared by convert and verify.

The layout convention (docs/layouts.md): each tensor of an artifact carries ``perm``, the axis
permutation with ``artifact_tensor = source_tensor.transpose(perm)``. The identity permutation
means the artifact keeps the source layout. ``perm`` is recorded from what the converter did,
never inferred by trying permutations against outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

Dim = int | str | None
"""A dimension: a fixed size, a symbolic name (``"batch"``), or unknown."""


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_last_perm(rank: int) -> tuple[int, ...]:
    """The permutation that moves axis 1 (channels) last: ``[0, 2, ..., rank-1, 1]``."""
    if rank < 3:
        return identity(rank)
    return (0, *range(2, rank), 1)


def invert(perm: Sequence[int]) -> tuple[int, ...]:
    """The permutation that undoes `perm`."""
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return tuple(inverse)


def compose(first: Sequence[int], then: Sequence[int]) -> tuple[int, ...]:
    """The permutation equal to transposing by `first` and then by `then`."""
    return tuple(first[t] for t in then)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of one artifact."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    source_name: str = ""
    perm: tuple[int, ...] = ()
    quantization: tuple[float, int] | None = None
    """(scale, zero_point) of an integer tensor that stands for real values: real = scale * (q - zero_point).
    Verify quantizes the inputs and dequantizes the outputs with it (a TFLite model with int8 inputs and outputs)."""

    def __post_init__(self) -> None:
        if not self.source_name:
            object.__setattr__(self, "source_name", self.name)
        if not self.perm:
            object.__setattr__(self, "perm", identity(len(self.shape)))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def dynamic_batch(self) -> bool:
        """Its first dimension is symbolic or unknown."""
        return bool(self.shape) and not isinstance(self.shape[0], int)

    @property
    def source_shape(self) -> tuple[Dim, ...]:
        """The shape in the source's layout."""
        inverse = invert(self.perm)
        return tuple(self.shape[i] for i in inverse)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source_name": self.source_name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "perm": list(self.perm),
            "quantization": list(self.quantization) if self.quantization is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            source_name=str(data.get("source_name") or data["name"]),
            shape=tuple(data["shape"]),
            dtype=str(data["dtype"]),
            perm=tuple(int(p) for p in data.get("perm") or ()),
            quantization=(float(data["quantization"][0]), int(data["quantization"][1]))
            if isinstance(data.get("quantization"), list) else None,
        )


@dataclass(frozen=True)
class Signature:
    """The inputs and outputs of one artifact, in the artifact's own order."""

    inputs: tuple[TensorSpec, ...] = field(default_factory=tuple)
    outputs: tuple[TensorSpec, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_json(t) for t in data.get("inputs", [])),
            outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", [])),
        )

    def input(self, source_name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.source_name == source_name:
                return spec
        raise KeyError(source_name)

    def output(self, source_name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.source_name == source_name:
                return spec
        raise KeyError(source_name)

    def with_source_names(self, source: Signature) -> Signature:
        """Tie this signature's tensors to `source` positionally where names were lost."""

        def tie(mine: tuple[TensorSpec, ...], theirs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
            if len(mine) != len(theirs):
                return mine
            return tuple(replace(m, source_name=t.source_name) for m, t in zip(mine, theirs, strict=False))

        return Signature(tie(self.inputs, source.inputs), tie(self.outputs, source.outputs))


def carry_layout(parent: Signature, child: Signature, hop_perms: dict[str, tuple[int, ...]] | None = None) -> Signature:
    """The child's signature with source names and perms carried over from its parent.

    Tensors are matched by name where the converter kept names, else by position. `hop_perms`
    maps a child tensor name to the permutation the hop applied to it (``child = parent.transpose(p)``);
    tensors without one kept their parent's layout.
    """
    hop_perms = hop_perms or {}

    def match(mine: tuple[TensorSpec, ...], theirs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        # onnx2tf writes ":" in names as "__"; both spellings find the ancestor.
        by_name = {alias: t for t in theirs for alias in (t.name, t.name.replace(":", "__"))}
        out = []
        for i, spec in enumerate(mine):
            ancestor = by_name.get(spec.name) or (theirs[i] if i < len(theirs) else None)
            if ancestor is None:
                out.append(spec)
                continue
            step = hop_perms.get(spec.name, identity(spec.rank))
            perm = compose(ancestor.perm, step) if len(ancestor.perm) == len(step) else step
            out.append(TensorSpec(spec.name, spec.shape, spec.dtype, ancestor.source_name, perm, spec.quantization))
        return tuple(out)

    return Signature(match(child.inputs, parent.inputs), match(child.outputs, parent.outputs))
