"""`manifest.json`: the typed record of what `bridge convert` wrote (schema in docs/schemas.md).

The manifest is written last and atomically, and lists only complete files whose sha256 it
recorded, so a reader can trust every path it names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import InputError
from bridge.formats import Format
from bridge.signature import Signature
from bridge.staging import atomic_write_text

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "bridge.manifest/1"


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

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


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
    signature: Signature
    precision: str = "float32"
    fallback: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A short unique name: the format, with the precision when it is not float32."""
        return self.format.value if self.precision == "float32" else f"{self.format.value}-{self.precision}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format.value,
            "path": self.path,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "made_from": self.made_from.value,
            "hop": self.hop,
            "tool": self.tool.to_json(),
            "seconds": round(self.seconds, 3),
            "options": self.options,
            "precision": self.precision,
            "fallback": self.fallback,
            "notes": list(self.notes),
            **self.signature.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            format=Format(data["format"]),
            path=str(data["path"]),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            made_from=Format(data["made_from"]),
            hop=str(data["hop"]),
            tool=Tool(**data["tool"]),
            seconds=float(data["seconds"]),
            options=dict(data.get("options") or {}),
            signature=Signature.from_json(data),
            precision=str(data.get("precision", "float32")),
            fallback=data.get("fallback"),
            notes=tuple(data.get("notes") or ()),
        )


@dataclass(frozen=True)
class Source:
    """The model convert started from. `path` is a file, a directory or a Python reference."""

    path: str
    format: Format
    kind: str
    """How the model file is stored: ``exported_program``, ``torchscript``, ``pickled_module``, or the format."""
    sha256: str
    bytes: int
    signature: Signature
    origin: str = ""
    """The `bridge.sources.SourceKind` it came from: ``model_file``, ``factory``, ``live_object``, ..."""
    materialized: str | None = None
    """For a Python reference or in-memory model: the file bridge saved it to, relative to DIR."""
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format.value,
            "kind": self.kind,
            "origin": self.origin,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "materialized": self.materialized,
            "notes": list(self.notes),
            **self.signature.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Source:
        return cls(
            path=str(data["path"]),
            format=Format(data["format"]),
            kind=str(data["kind"]),
            origin=str(data.get("origin") or ""),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
            signature=Signature.from_json(data),
            materialized=data.get("materialized"),
            notes=tuple(data.get("notes") or ()),
        )


@dataclass(frozen=True)
class HopFailure:
    """A hop that did not produce its artifact; what came before it is kept."""

    hop: str
    error: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"hop": self.hop, "error": self.error, "detail": self.detail}


@dataclass(frozen=True)
class Manifest:
    """Everything `bridge convert` wrote into one output directory."""

    source: Source
    artifacts: tuple[Artifact, ...]
    route: tuple[str, ...]
    bridge_version: str
    tool_versions: dict[str, str] = field(default_factory=dict)
    failures: tuple[HopFailure, ...] = ()
    schema: str = MANIFEST_SCHEMA

    def artifact(self, key: str) -> Artifact:
        """The artifact called `key` (``onnx``, ``tflite-float16``), or an InputError naming the ones there are."""
        for artifact in self.artifacts:
            if artifact.key == key:
                return artifact
        have = ", ".join(a.key for a in self.artifacts) or "none"
        raise InputError(f"no {key!r} artifact in this conversion (it has: {have}); convert with --to {key.split('-')[0]}")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "bridge_version": self.bridge_version,
            "source": self.source.to_json(),
            "route": list(self.route),
            "tool_versions": dict(self.tool_versions),
            "artifacts": [a.to_json() for a in self.artifacts],
            "failures": [f.to_json() for f in self.failures],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        atomic_write_text(path, self.dumps())
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            schema=str(data.get("schema", MANIFEST_SCHEMA)),
            bridge_version=str(data.get("bridge_version", "")),
            source=Source.from_json(data["source"]),
            route=tuple(data.get("route") or ()),
            tool_versions=dict(data.get("tool_versions") or {}),
            artifacts=tuple(Artifact.from_json(a) for a in data.get("artifacts", [])),
            failures=tuple(HopFailure(**f) for f in data.get("failures", [])),
        )

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read DIR/manifest.json; an InputError names what is wrong with it."""
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise InputError(f"{directory}: no {MANIFEST_NAME}; run `bridge convert` to make one")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            manifest = cls.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a valid bridge manifest ({exc}); convert the model again") from exc
        if not manifest.schema.startswith("bridge.manifest/"):
            raise InputError(f"{path}: unknown manifest schema {manifest.schema!r}")
        return manifest
