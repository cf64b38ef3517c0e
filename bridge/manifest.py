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
SCHEMA_FILE = Path(__file__).with_name("manifest_schema.json")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                    "uint8", "uint16", "uint32", "uint64", "bool"})
"""The tensor dtypes bridge feeds and reads; anything else in a manifest is refused."""


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
    log: str | None = None
    """The runtime's whole output for the check, relative to the folder (``logs/...``)."""

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
    log: str | None = None
    """The converter's whole output for this attempt, relative to the folder (``logs/...``)."""


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
    log: str | None = None
    """The converter's whole output for the kept candidate, relative to the folder (``logs/...``)."""
    notes: tuple[str, ...] = ()
    name_map: str | None = None
    """The names the converter gave the parent's tensors in this artifact (``tflite/tensor_names.json``), relative
    to the folder; `bridge explain` joins the two graphs with it."""

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
class Pretrained:
    """A Hugging Face source: the copy of its ``save_pretrained`` folder verify rebuilds the model from."""

    directory: str
    """The copy (config and weights), relative to DIR."""
    architecture: str
    """The Transformers class that loads it (from the config's architectures, or --task's Auto class)."""
    task: str | None = None
    kv_cache: bool = False
    """The program returns the key/value cache too (``--kv-cache``): the eager model is rebuilt to return it."""


@dataclass(frozen=True)
class OpsetUpgrade:
    """An ONNX source older than the runtimes accept, lifted before the first hop (bridge.onnx_opset)."""

    from_opset: int
    to_opset: int
    tool: str
    """``onnx.version_converter 1.20.1``."""
    checked_with: str
    """How the upgraded model was compared with the original: ``onnx.reference against onnxruntime``."""
    max_abs: float
    """The largest difference seen on the check's inputs (within the upgrade tolerance, or it was refused)."""
    original_sha256: str = ""
    """The user's file; the source's own sha256 is the lifted file's, which every hop and verify read."""
    notes: tuple[str, ...] = ()
    """What bridge changed beside the converter: a change of meaning between opsets it has no adapter for."""


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
    pretrained: Pretrained | None = None
    """For a Hugging Face folder: where its copy is, and how it is loaded (verify runs it eagerly)."""
    sequence_length: int | None = None
    """The size a symbolic dimension after the batch had in the example the source was built with (a Hugging Face
    model's ``--dynamic-seq``): checks and verify feed that length, and checks a second one."""
    upgrade: OpsetUpgrade | None = None
    """An old ONNX file lifted to the opset the hops prefer: `materialized` is the lifted file, what every hop reads."""

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
    log: str | None = None
    """The last attempt's whole converter output, relative to the folder (``logs/...``)."""


@dataclass(frozen=True)
class ChecksRecord:
    """The fixed inputs every artifact was checked on as it was made."""

    seed: int
    samples: int
    sha256: str
    batches: tuple[int, ...] = (1,)
    """The batch size of each input set: 1, and 2 as well when the source's batch is symbolic."""
    lengths: tuple[int | None, ...] = ()
    """The length of a symbolic sequence axis in each input set (the example's, then a shorter one); empty when none."""


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
        """Read DIR/manifest.json as untrusted input: JSON Schema, then types, then meaning.

        Any problem is an InputError that names the file, the field and what was expected.
        """
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise InputError(f"{directory}: no {MANIFEST_NAME}; run `bridge convert` to make one")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: {path.stat().st_size} bytes, larger than any manifest bridge writes; not a bridge manifest")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: not valid JSON ({reason}); convert the model again") from exc
        schema = data.get("schema") if isinstance(data, dict) else None
        if schema != MANIFEST_SCHEMA:
            raise InputError(f"{path}: manifest schema {str(schema)[:80]!r}, but this bridge reads {MANIFEST_SCHEMA}; "
                             "convert the model again with this bridge")
        try:
            records.validate(data, SCHEMA_FILE)
            manifest = cls.from_json(data)
        except records.RecordError as exc:
            raise InputError(f"{path}: {exc}; convert the model again") from exc
        _check_meaning(manifest, directory, path)
        return manifest


def _check_meaning(manifest: Manifest, directory: Path, path: Path) -> None:
    """What a schema cannot say: known dtypes, permutations, paths inside the folder, a consistent route."""
    def fail(where: str, problem: str) -> None:
        raise InputError(f"{path}: {where}: {problem}; convert the model again")

    def tensors(where: str, specs: tuple[TensorSpec, ...]) -> None:
        for i, spec in enumerate(specs):
            if spec.dtype not in DTYPES:
                fail(f"{where}[{i}].dtype", f"{spec.dtype[:40]!r} is not a dtype bridge knows ({', '.join(sorted(DTYPES))})")
            if sorted(spec.perm) != list(range(spec.rank)):
                fail(f"{where}[{i}].perm", f"{list(spec.perm)[:8]} is not a permutation of the {spec.rank} axes of shape "
                                           f"{list(spec.shape)[:8]}")

    tensors("source.inputs", manifest.source.inputs)
    tensors("source.outputs", manifest.source.outputs)
    if manifest.source.materialized is None:
        fail("source.materialized", "missing: the source must be inside the folder (bridge reads nothing outside it)")
    else:
        inside(directory, manifest.source.materialized, path, "source.materialized")
    if manifest.source.pretrained is not None:
        inside(directory, manifest.source.pretrained.directory, path, "source.pretrained.directory")
    formats = {manifest.source.format}
    keys: set[str] = set()
    for i, artifact in enumerate(manifest.artifacts):
        where = f"artifacts[{i}]"
        tensors(f"{where}.inputs", artifact.inputs)
        tensors(f"{where}.outputs", artifact.outputs)
        for kind in ("inputs", "outputs"):  # nothing could be fed to it, or compared: it is not what convert wrote
            if getattr(manifest.source, kind) and not getattr(artifact, kind):
                fail(f"{where}.{kind}", f"empty, while the source has {kind}")
        inside(directory, artifact.path, path, f"{where}.path")
        if artifact.name_map is not None:
            inside(directory, artifact.name_map, path, f"{where}.name_map")
        if artifact.key in keys:
            fail(f"{where}", f"a second {artifact.key!r} artifact")
        if artifact.made_from not in formats:
            fail(f"{where}.made_from", f"{artifact.made_from.value!r}, which no earlier artifact of this folder is")
        if artifact.hop != f"{artifact.made_from.value}->{artifact.format.value}":
            fail(f"{where}.hop", f"{artifact.hop[:40]!r} does not join {artifact.made_from.value} to {artifact.format.value}")
        keys.add(artifact.key)
        formats.add(artifact.format)


def inside(directory: Path, relative: str, manifest_path: Path, where: str) -> Path:
    """`relative` resolved inside `directory` (symlinks followed), or an InputError naming the field."""
    from bridge.safety import escapes

    root = directory.resolve()
    target = (root / relative).resolve()
    if escapes(relative) or (target != root and root not in target.parents):
        raise InputError(f"{manifest_path}: {where}: {relative[:200]!r} is outside {directory}; "
                         "bridge reads nothing outside the folder it is given (convert the model again)")
    return target
