"""What every hop shares: the job it is given and the result it returns.

A hop converts one artifact into the next format by calling the library made for that hop, and
reports the signature of what it wrote: tensor names, shapes, dtypes and each tensor's ``perm``
relative to the *source* model (docs/layouts.md, `bridge.signature.carry_layout`), derived from
what the converter did. The child step that runs a hop is `bridge.steps.hop`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.messages import Produced, SourceCode
from bridge.options import ConvertOptions
from bridge.registry import DEFAULT_CANDIDATE, Candidate
from bridge.signature import Signature

__all__ = ["Hop", "HopJob", "HopResult", "Produced"]


@dataclass(frozen=True)
class HopJob:
    """One conversion to perform: the parent artifact, its signature, and where to write."""

    src: Path
    signature: Signature
    out_dir: Path
    options: ConvertOptions
    candidate: Candidate = DEFAULT_CANDIDATE
    """Which of the hop's ways to use (its `settings` are the hop's to read)."""
    code: SourceCode | None = None
    """The factory the user named, when the source is code (only hops that convert code read it)."""


@dataclass(frozen=True)
class HopResult:
    """What a hop wrote, and how."""

    produced: tuple[Produced, ...]
    options: dict[str, Any] = field(default_factory=dict)
    """The options the wrapped library was called with, as recorded in the manifest."""
    notes: tuple[str, ...] = ()


class Hop(abc.ABC):
    """A conversion from one format to another through one library (declared by a `bridge.registry.HopSpec`)."""

    @abc.abstractmethod
    def convert(self, job: HopJob) -> HopResult:
        """Write the artifact into `job.out_dir` and describe it."""
