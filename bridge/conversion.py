"""The conversion pipeline: resolve the source, plan the route, run each hop isolated, publish.

Everything is written into a hidden staging directory beside the output directory and moved
into place at the end, with the manifest written last; a killed run leaves the previous output
or none (docs/safety.md). A hop that fails is recorded and its descendants are skipped; the
artifacts made before it are kept.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import __version__, formats, pt2, safety, staging
from bridge.errors import HopError, InputError, UserError
from bridge.formats import Format
from bridge.hops.base import ConvertOptions, package_version
from bridge.inputs import InputSpecs, parse_example_inputs
from bridge.isolation import run_isolated
from bridge.manifest import Artifact, HopFailure, Manifest, Source, Tool, sha256_of
from bridge.registry import DEFAULT_REGISTRY, HopRegistry
from bridge.route import Route, plan, reachable
from bridge.signature import Signature

TORCH_EXPORTERS = ("dynamo", "torchscript")
TOOL_DISTRIBUTIONS = ("torch", "onnx", "onnxscript", "onnxruntime", "onnx2tf", "tensorflow", "keras",
                      "tf2onnx", "onnx2torch", "ai-edge-litert", "numpy")


@dataclass(frozen=True)
class ProgressEvent:
    """What the pipeline is doing, for a progress display: ``start``, ``done`` or ``failed``."""

    kind: str
    step: str
    seconds: float = 0.0
    message: str = ""


@dataclass(frozen=True)
class Conversion:
    """The result of `convert`: where everything went and what the manifest says."""

    out_dir: Path
    manifest: Manifest
    route: Route
    source_object: Any = field(default=None, compare=False, repr=False)
    """The live nn.Module or Keras model when one was passed in (not stored anywhere)."""

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        return self.manifest.artifacts

    @property
    def failures(self) -> tuple[HopFailure, ...]:
        return self.manifest.failures

    @property
    def ok(self) -> bool:
        return not self.manifest.failures

    def path(self, key: str | Format) -> Path:
        """The absolute path of the artifact of format `key` (``tflite``, ``tflite-float16``)."""
        name = key.value if isinstance(key, Format) else key
        return self.out_dir / self.manifest.artifact(name).path

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"


def parse_targets(to: str | Format | Sequence[str | Format], source: Format, registry: HopRegistry) -> tuple[Format, ...]:
    """``tflite``, ``onnx,tf``, ``all`` or a list of formats."""
    items: list[str | Format] = []
    for item in [to] if isinstance(to, (str, Format)) else list(to):
        items.extend(item.split(",") if isinstance(item, str) else [item])
    if any(isinstance(i, str) and i.strip().lower() == "all" for i in items):
        return tuple(f for f in reachable(source, registry) if f != source)
    return tuple(i if isinstance(i, Format) else Format.parse(i) for i in items if str(i).strip())


def convert(
    model: Any,
    to: str | Format | Sequence[str | Format],
    *,
    out_dir: str | Path | None = None,
    from_format: str | Format | None = None,
    via: Sequence[str | Format] = (),
    example_inputs: Any = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    fp16: bool = False,
    timeout: float | None = None,
    force: bool = False,
    trust_pickle: bool = False,
    trust_code: bool = False,
    torch_exporter: str = "dynamo",
    strict: bool = True,
    registry: HopRegistry = DEFAULT_REGISTRY,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> Conversion:
    """Convert `model` to every format in `to`, keeping every intermediate artifact.

    `model` is a path (.pt2, .pt, .onnx, SavedModel dir, .keras, .tflite), a ``package.module:factory``
    reference, or a live nn.Module / Keras model. `example_inputs` is an ``.npz`` path, a dict of
    arrays or a tuple of tensors; TorchScript and live modules need it or `input_shapes`.
    With `strict` (the default) a failed hop raises HopError after the completed artifacts are
    published; the partial Conversion is on the exception's ``conversion`` attribute.
    """
    notify = progress or (lambda event: None)
    if torch_exporter not in TORCH_EXPORTERS:
        raise InputError(f"torch_exporter {torch_exporter!r}: use one of {', '.join(TORCH_EXPORTERS)}")
    options = ConvertOptions(opset=opset, dynamic_batch=dynamic_batch, fp16=fp16, timeout=timeout,
                             trust_pickle=trust_pickle, trust_code=trust_code, torch_exporter=torch_exporter)
    specs = parse_example_inputs(example_inputs, input_shapes)
    resolved = _resolve_source(model, from_format)
    targets = parse_targets(to, resolved.format, registry)
    route = plan(resolved.format, targets, via=[Format.parse(v) if isinstance(v, str) else v for v in via], registry=registry)
    final_dir = Path(out_dir) if out_dir is not None else resolved.default_out_dir
    stage = staging.prepare(final_dir, force=force)
    try:
        source = _describe_source(resolved, specs, options, stage, notify)
        artifacts, failures = _run_route(route, source, stage, options, notify)
        manifest = Manifest(
            source=source,
            artifacts=tuple(artifacts),
            route=tuple(route.describe().split("; ")),
            bridge_version=__version__,
            tool_versions={d: package_version(d) for d in TOOL_DISTRIBUTIONS},
            failures=tuple(failures),
        )
        manifest.write(stage)
        staging.publish(stage, final_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    conversion = Conversion(final_dir, manifest, route, source_object=resolved.live)
    if failures and strict:
        first = failures[0]
        error = HopError(
            f"hop {first.hop} failed: {first.error}"
            + (f" ({len(failures) - 1} more failed or skipped)" if len(failures) > 1 else "")
            + f"; completed artifacts are in {final_dir}",
            stage=first.hop,
            detail=first.detail,
            conversion=conversion,
        )
        raise error
    return conversion


@dataclass(frozen=True)
class _Resolved:
    format: Format
    path: Path | None
    reference: str | None
    live: Any
    default_out_dir: Path


def _resolve_source(model: Any, from_format: str | Format | None) -> _Resolved:
    forced = Format.parse(from_format) if isinstance(from_format, str) else from_format
    if isinstance(model, (str, Path)):
        text = str(model)
        if isinstance(model, str) and formats.is_reference(text):
            factory = text.rsplit(":", 1)[1]
            return _Resolved(forced or Format.TORCH, None, text, None, Path.cwd() / f"{factory}.bridge")
        path = Path(text)
        fmt = forced if forced is not None and path.exists() else formats.detect(path)
        name = path.name if path.is_dir() else path.stem
        return _Resolved(fmt, path.resolve(), None, None, path.resolve().parent / f"{name}.bridge")
    module = type(model).__module__
    if "torch" in sys.modules and isinstance(model, sys.modules["torch"].nn.Module):
        return _Resolved(Format.TORCH, None, None, model, Path.cwd() / "model.bridge")
    if module.startswith(("keras", "tf_keras", "tensorflow")):
        return _Resolved(Format.KERAS, None, None, model, Path.cwd() / "model.bridge")
    raise InputError(f"cannot convert a {type(model).__name__}: pass a path, a package.module:factory reference, an nn.Module or a Keras model")


def _describe_source(resolved: _Resolved, specs: InputSpecs | None, options: ConvertOptions, stage: Path,
                     notify: Callable[[ProgressEvent], None]) -> Source:
    """Materialize a reference or live model into the stage if needed, then read its signature."""
    materialized: str | None = None
    notes: list[str] = []
    path = resolved.path
    fmt = resolved.format
    if resolved.reference is not None or resolved.live is not None:
        notify(ProgressEvent("start", "materialize"))
        started = time.perf_counter()
        target = stage / "source"
        if resolved.live is not None:
            from bridge.hops.materialize import materialize

            result = materialize(resolved.live, target, specs, options.dynamic_batch,
                                 torchscript=options.torch_exporter == "torchscript")
        else:
            result = run_isolated("materialize", {
                "reference": resolved.reference, "out_dir": str(target),
                "specs": specs.to_json() if specs else None, "dynamic_batch": options.dynamic_batch,
                "torchscript": options.torch_exporter == "torchscript",
            }, stage="materialize", timeout=options.timeout, hide_gpu=True)
        path = Path(result["path"])
        fmt = Format(result["format"])
        materialized = path.relative_to(stage).as_posix()
        if result.get("note"):
            notes.append(result["note"])
        if specs is None and result.get("specs"):
            specs = InputSpecs(tuple((n, tuple(v[0]), v[1]) for n, v in result["specs"].items()), origin=resolved.reference or "")
        notify(ProgressEvent("done", "materialize", time.perf_counter() - started))
    assert path is not None
    if fmt == Format.TORCH and safety.is_torchscript_archive(path) and specs is None:
        # (A pickled .pt goes on to the loader, which refuses it unless --trust-pickle, and then asks.)
        raise InputError(
            f"{path}: TorchScript and pickled modules do not store input shapes; "
            "give --input-shape NAME:1,3,224,224 (repeatable) or --example-inputs FILE.npz"
        )
    fast = pt2.read_signature(path) if fmt == Format.TORCH and path.suffix.lower() == ".pt2" else None
    if fast is not None:
        info: dict[str, Any] = {"kind": "exported_program"}
        signature = fast
    else:
        info = run_isolated("inspect", {
            "format": fmt.value, "path": str(path), "input_specs": specs.to_json() if specs else None,
            "trust_pickle": options.trust_pickle, "trust_code": options.trust_code,
        }, stage=f"load {fmt.value}", timeout=options.timeout, hide_gpu=True)
        signature = Signature.from_json(info["signature"])
    if specs is not None:
        specs.check_against(signature, path)
    digest, size = sha256_of(path)
    return Source(
        path=resolved.reference or (str(resolved.path) if resolved.path else "<in-memory model>"),
        format=fmt, kind=info.get("kind", fmt.value), sha256=digest, bytes=size,
        signature=signature, materialized=materialized, notes=tuple(notes),
    )


def _run_route(route: Route, source: Source, stage: Path, options: ConvertOptions,
               notify: Callable[[ProgressEvent], None]) -> tuple[list[Artifact], list[HopFailure]]:
    source_path = stage / source.materialized if source.materialized else Path(source.path)
    made: dict[Format, tuple[Path, Signature]] = {route.source: (source_path, source.signature)}
    artifacts: list[Artifact] = []
    failures: list[HopFailure] = []
    for hop in route.hops:
        if hop.src not in made:
            failures.append(HopFailure(hop.name, f"not run: no {hop.src.value} artifact to start from"))
            continue
        src_path, src_signature = made[hop.src]
        out_dir = stage / hop.dst.value
        notify(ProgressEvent("start", hop.name))
        started = time.perf_counter()
        try:
            result = run_isolated("hop", {
                "hop": hop.to_json(), "src": str(src_path), "signature": src_signature.to_json(),
                "out_dir": str(out_dir), "options": options.to_json(),
            }, stage=hop.name, timeout=options.timeout, hide_gpu=True, work_dir=stage)
        except UserError as exc:  # a failed, crashed or timed-out hop, a missing extra, an artifact it refused
            shutil.rmtree(out_dir, ignore_errors=True)
            detail = getattr(exc, "detail", "")
            failures.append(HopFailure(hop.name, str(exc).removeprefix(f"{hop.name}: "), detail))
            notify(ProgressEvent("failed", hop.name, time.perf_counter() - started, str(exc)))
            continue
        seconds = time.perf_counter() - started
        for i, produced in enumerate(result["produced"]):
            path = Path(produced["path"])
            signature = Signature.from_json(produced["signature"])
            digest, size = sha256_of(path)
            artifact = Artifact(
                format=hop.dst, path=path.relative_to(stage).as_posix(), sha256=digest, bytes=size,
                made_from=hop.src, hop=hop.name, tool=Tool(**result["tool"]), seconds=seconds,
                options=result["options"], signature=signature, precision=produced["precision"],
                fallback=result["fallback"], notes=tuple(result["notes"]),
            )
            artifacts.append(artifact)
            if i == 0:
                made[hop.dst] = (path, signature)
        notify(ProgressEvent("done", hop.name, seconds))
    return artifacts, failures

