"""What every hop shares: its options, its input, its result, and the child-process entry point.

A hop converts one artifact into the next format by calling the library made for that hop, and
reports the signature of what it wrote: tensor names, shapes, dtypes and each tensor's ``perm``
relative to the *source* model (docs/layouts.md), derived from what the converter did.
"""

from __future__ import annotations

import abc
import importlib.metadata
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.signature import Signature, TensorSpec, compose


@dataclass(frozen=True)
class ConvertOptions:
    """The options a user gives `bridge convert`; each hop picks the ones it uses."""

    opset: int | None = None
    dynamic_batch: bool = False
    fp16: bool = False
    timeout: float | None = None
    trust_pickle: bool = False
    trust_code: bool = False
    torch_exporter: str = "dynamo"
    """``dynamo`` or ``torchscript``: which torch.onnx exporter the torch -> onnx hop uses."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConvertOptions:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class HopJob:
    """One conversion to perform: the parent artifact, its signature, and where to write."""

    src: Path
    signature: Signature
    out_dir: Path
    options: ConvertOptions


@dataclass(frozen=True)
class Produced:
    """One file or directory a hop wrote, with its signature relative to the source."""

    path: Path
    signature: Signature
    precision: str = "float32"


@dataclass(frozen=True)
class HopResult:
    produced: tuple[Produced, ...]
    options: dict[str, Any] = field(default_factory=dict)
    """The options the wrapped library was called with, as recorded in the manifest."""
    fallback: str | None = None
    """Set when the preferred path failed and another was used: what failed and what ran instead."""
    notes: tuple[str, ...] = ()


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Hop(abc.ABC):
    """A conversion from one format to another through one library."""

    #: The pip distribution whose version is recorded in the manifest.
    distribution: str = ""

    @abc.abstractmethod
    def convert(self, job: HopJob) -> HopResult:
        """Write the artifact into `job.out_dir` and describe it."""


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
            step = hop_perms.get(spec.name, tuple(range(spec.rank)))
            perm = compose(ancestor.perm, step) if len(ancestor.perm) == len(step) else step
            out.append(TensorSpec(spec.name, spec.shape, spec.dtype, ancestor.source_name, perm))
        return tuple(out)

    return Signature(match(child.inputs, parent.inputs), match(child.outputs, parent.outputs))


def run_hop_task(request: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry point for one hop (see bridge.isolation)."""
    from bridge.registry import HopSpec

    spec = HopSpec.from_json(request["hop"])  # the parent's registry may be one a test built
    hop = spec.load()
    job = HopJob(
        src=Path(request["src"]),
        signature=Signature.from_json(request["signature"]),
        out_dir=Path(request["out_dir"]),
        options=ConvertOptions.from_json(request["options"]),
    )
    job.out_dir.mkdir(parents=True, exist_ok=True)
    result = hop.convert(job)
    return {
        "produced": [
            {"path": str(p.path), "signature": p.signature.to_json(), "precision": p.precision}
            for p in result.produced
        ],
        "options": result.options,
        "fallback": result.fallback,
        "notes": list(result.notes),
        "tool": {"name": spec.tool, "version": package_version(hop.distribution)},
    }
