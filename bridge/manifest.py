"""`manifest.json`: the typed record of what `bridge convert` wrote (schema in docs/schemas.md).

The manifest is written last and atomically, and lists only complete files whose sha256 it
recorded. It is written and read through bridge.records, so a damaged or edited manifest is an
InputError naming the field, never a KeyError. Every artifact says how it was made: the candidate
kept, every attempt with its outcome, and the check that ran it against its parent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import records
from bridge.errors import InputError
from bridge.formats import Format
from bridge.signature import Signature, TensorSpec
from bridge.staging import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "bridge.manifest/2"
READABLE_SCHEMAS = ("bridge.manifest/1", MANIFEST_SCHEMA)


def sha256_of(path: Path) -> tuple[str, int]:
    """The sha256 and size in bytes of a file, or of a directory's files in sorted order."""
    digest = hashlib.sha256()
    total = 0
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                total += len(block)
    return digest.hexdigest(), total


@dataclass(frozen=True)
class Tool:
    """The library a hop wrapped, and its version."""

    name: str
    version: str


# Attempt outcomes.
PASSED, DRIFT, UNRUNNABLE, FAILED, NOT_CHECKED = "passed", "drift", "unrunnable", "failed", "not checked"
NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class CheckedOutput:
    """One output of a checked artifact against the same output of its parent."""

    name: str
    max_abs: float | None
    atol: float
    rtol: float
    passed: bool
    error: str | None = None


@dataclass(frozen=True)
class Check:
    """An artifact run in its own runtime right after it was made, and compared with its parent."""

    passed: bool
    runtime: str
    outputs: tuple[CheckedOutput, ...]
    source_max_abs: float | None = None
    """The worst max abs difference from the source (cumulative), when the source ran."""
    seconds: float = 0.0

    def worst(self) -> CheckedOutput | None:
        """The output furthest over (or closest to) its tolerance."""
        def ratio(o: CheckedOutput) -> float:
            return float("inf") if o.max_abs is None else o.max_abs / max(o.atol, 1e-30)

        return max(self.outputs, key=ratio, default=None)


@dataclass(frozen=True)
class Attempt:
    """One candidate tried for a hop, and what came of it."""

    candidate: str
    outcome: str
    """``passed``, ``drift`` (ran, over tolerance), ``unrunnable`` (written but would not load or run),
    ``failed`` (the converter raised or crashed), ``not applicable`` (the candidate has nothing to do for this
    model), or ``not checked`` (``--no-check``)."""
    message: str = ""
    """The first line of the error, or the drift figure."""
    max_abs: float | None = None
    output: str | None = None
    """The output the figure is for."""
    seconds: float = 0.0


@dataclass(frozen=True)
class Artifact:
    """One converted model in the output directory."""

    format: Format
    path: str
    sha256: str
    bytes: int
    made_from: Format
    hop: str
    tool: Tool
    seconds: float
    options: dict[str, Any]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str = "float32"
    candidate: str = ""
    """The candidate kept (registry.HopSpec.candidates)."""
    kept_because: str = ""
    attempts: tuple[Attempt, ...] = ()
    check: Check | None = None
    """None when convert ran with --no-check, or when the artifact cannot run here (the note says why)."""
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A short unique name: the format, with the precision when it is not float32."""
        return self.format.value if self.precision == "float32" else f"{self.format.value}-{self.precision}"

    @property
    def signature(self) -> Signature:
        return Signature(self.inputs, self.outputs)

    @property
    def verified(self) -> bool:
        """It ran in its runtime and agreed with its parent when it was made."""
        return self.check is not None and self.check.passed


@dataclass(frozen=True)
class Source:
    """The model convert started from. `path` is a file, a directory or a Python reference."""

    path: str
    format: Format
    kind: str
    """How the model file is stored: ``exported_program``, ``torchscript``, ``pickled_module``, or the format."""
    sha256: str
    bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    origin: str = ""
    """The `bridge.sources.SourceKind` it came from: ``model_file``, ``factory``, ``live_object``, ..."""
    materialized: str | None = None
    """For a Python reference or in-memory model: the file bridge saved it to, relative to DIR."""
    notes: tuple[str, ...] = ()

    @property
    def signature(self) -> Signature:
        return Signature(self.inputs, self.outputs)


@dataclass(frozen=True)
class HopFailure:
    """A hop that did not produce a verified artifact; what came before it is kept."""

    hop: str
    error: str
    detail: str = ""
    attempts: tuple[Attempt, ...] = ()
    kept: str | None = None
    """The key of the closest artifact kept although it did not verify, or None when none was made."""
    resolved_by: str | None = None
    """The longer route that made a verified artifact of the same format instead; the hop's failure is then not the run's."""


@dataclass(frozen=True)
class ChecksRecord:
    """The fixed inputs every artifact was checked on as it was made."""

    seed: int
    samples: int
    sha256: str
    batches: tuple[int, ...] = (1,)
    """The batch sizes each artifact ran at: 1, and 2 as well when the source's batch is symbolic."""


@dataclass(frozen=True)
class Manifest:
    """Everything `bridge convert` wrote into one output directory."""

    source: Source
    artifacts: tuple[Artifact, ...]
    route: tuple[str, ...]
    bridge_version: str
    tool_versions: dict[str, str] = field(default_factory=dict)
    failures: tuple[HopFailure, ...] = ()
    checks: ChecksRecord | None = None
    """None when convert ran with --no-check."""
    schema: str = MANIFEST_SCHEMA

    def artifact(self, key: str) -> Artifact:
        """The artifact called `key` (``onnx``, ``tflite-float16``), or an InputError naming the ones there are."""
        for artifact in self.artifacts:
            if artifact.key == key:
                return artifact
        have = ", ".join(a.key for a in self.artifacts) or "none"
        raise InputError(f"no {key!r} artifact in this conversion (it has: {have}); convert with --to {key.split('-')[0]}")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = records.to_json(self)
        first = ("schema", "bridge_version", "source", "route", "tool_versions", "checks")
        return {**{k: data[k] for k in first}, **{k: v for k, v in data.items() if k not in first}}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        atomic_write_text(path, self.dumps())
        return path

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Read manifest data; a value that does not fit raises records.RecordError naming the field."""
        manifest = records.from_json(cls, data)
        return manifest

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read DIR/manifest.json; an InputError names the file and what is wrong with it."""
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise InputError(f"{directory}: no {MANIFEST_NAME}; run `bridge convert` to make one")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc}); convert the model again") from exc
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema not in READABLE_SCHEMAS:
            raise InputError(f"{path}: unknown manifest schema {schema!r} (this bridge reads {', '.join(READABLE_SCHEMAS)})")
        try:
            return cls.from_json(data)
        except records.RecordError as exc:
            raise InputError(f"{path}: not a valid bridge manifest: {exc}; convert the model again") from exc
