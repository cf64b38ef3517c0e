"""The conversion pipeline: resolve the source, plan the route, run each hop isolated, publish.

Everything is written into a hidden staging directory beside the output directory and moved
into place at the end, with the manifest written last; a killed run leaves the previous output
or none (docs/safety.md). A hop that fails is recorded and its descendants are skipped; the
artifacts made before it are kept.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import __version__, staging
from bridge.errors import HopError, UserError
from bridge.formats import Format
from bridge.inputs import parse_example_inputs
from bridge.isolation import run_isolated
from bridge.manifest import Artifact, HopFailure, Manifest, sha256_of
from bridge.messages import HopRequest
from bridge.options import ConvertOptions, parse_formats
from bridge.registry import DEFAULT_REGISTRY, HopRegistry
from bridge.route import Route, plan, reachable
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry
from bridge.signature import Signature
from bridge.sources import DEFAULT_RESOLVERS, Prepared, SourceContext, SourceResolver, resolver_for


@dataclass(frozen=True)
class ProgressEvent:
    """What the pipeline is doing, for a progress display: ``start``, ``done`` or ``failed`` of a step."""

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

    def __repr__(self) -> str:
        keys = ", ".join(a.key for a in self.artifacts)
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"Conversion({str(self.out_dir)!r}, route={self.route.describe()!r}, artifacts=[{keys}]{failed})"

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
    items = [to] if isinstance(to, (str, Format)) else list(to)
    if any(isinstance(i, str) and "all" in (p.strip().lower() for p in i.split(",")) for i in items):
        return tuple(f for f in reachable(source, registry) if f != source)
    return parse_formats(items)


def tool_versions(registry: HopRegistry, runners: RunnerRegistry) -> dict[str, str]:
    """The installed version of every distribution the hops and runners drive (and numpy)."""
    modules = {m for hop in registry for m in hop.requires} | {m for r in runners for m in r.requires} | {"numpy"}
    owners = importlib.metadata.packages_distributions()
    distributions = sorted({d for m in modules for d in owners.get(m, [m.replace("_", "-")])})
    versions = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def convert(
    model: Any,
    to: str | Format | Sequence[str | Format],
    options: ConvertOptions | None = None,
    *,
    out_dir: str | Path | None = None,
    force: bool = False,
    example_inputs: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    strict: bool = True,
    registry: HopRegistry = DEFAULT_REGISTRY,
    runners: RunnerRegistry = DEFAULT_RUNNERS,
    resolvers: Sequence[SourceResolver] = DEFAULT_RESOLVERS,
    progress: Callable[[ProgressEvent], None] | None = None,
    from_format: str | Format | None = None,
    via: str | Sequence[str | Format] | None = None,
    opset: int | None = None,
    dynamic_batch: bool | None = None,
    fp16: bool | None = None,
    timeout: float | None = None,
    trust_pickle: bool | None = None,
    trust_code: bool | None = None,
    torch_exporter: str | None = None,
) -> Conversion:
    """Convert `model` to every format in `to`, keeping every intermediate artifact.

    `model` is a path (.pt2, .pt, .onnx, SavedModel dir, .keras, .tflite), a ``package.module:factory``
    reference, or a live nn.Module / Keras model. `options` says how (`ConvertOptions`); each of its
    fields may also be given as a keyword (``opset=17``), which overrides it (None leaves it). `example_inputs` is an
    ``.npz`` path, a dict of arrays or a tuple of tensors; TorchScript and live modules need it or
    `input_shapes`. With `strict` (the default) a failed hop raises HopError after the completed
    artifacts are published; the partial Conversion is on the exception's ``conversion`` attribute.
    """
    options = ConvertOptions.build(
        options, from_format=from_format, via=via, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16,
        timeout=timeout, trust_pickle=trust_pickle, trust_code=trust_code, torch_exporter=torch_exporter,
    )
    notify = progress or (lambda event: None)
    specs = parse_example_inputs(example_inputs, input_shapes)
    resolver = resolver_for(model, resolvers)
    identified = resolver.identify(model, options)
    targets: tuple[Format, ...] | None = None
    if identified.format is not None:  # plan now, so a route that cannot exist fails before any work
        targets = parse_targets(to, identified.format, registry)
        plan(identified.format, targets, via=options.via, registry=registry)
    final_dir = Path(out_dir) if out_dir is not None else identified.default_out_dir
    stage = staging.prepare(final_dir, force=force)
    try:
        context = SourceContext(options, specs, stage, runners,
                                lambda kind, step, seconds: notify(ProgressEvent(kind, step, seconds)))
        prepared = resolver.prepare(identified, context)
        targets = parse_targets(to, prepared.format, registry)
        route = plan(prepared.format, targets, via=options.via, registry=registry)
        artifacts, failures = _run_route(route, prepared, stage, options, notify)
        manifest = Manifest(
            source=prepared.record,
            artifacts=tuple(artifacts),
            route=tuple(route.describe().split("; ")),
            bridge_version=__version__,
            tool_versions=tool_versions(registry, runners),
            failures=tuple(failures),
        )
        manifest.write(stage)
        staging.publish(stage, final_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    conversion = Conversion(final_dir, manifest, route, source_object=identified.live)
    if failures and strict:
        first = failures[0]
        raise HopError(
            f"hop {first.hop} failed: {first.error}"
            + (f" ({len(failures) - 1} more failed or skipped)" if len(failures) > 1 else "")
            + f"; completed artifacts are in {final_dir}",
            stage=first.hop,
            detail=first.detail,
            conversion=conversion,
        )
    return conversion


def _run_route(route: Route, source: Prepared, stage: Path, options: ConvertOptions,
               notify: Callable[[ProgressEvent], None]) -> tuple[list[Artifact], list[HopFailure]]:
    made: dict[Format, tuple[Path, Signature]] = {route.source: (source.path, source.signature)}
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
            result = run_isolated(HopRequest(hop, src_path, src_signature, out_dir, options),
                                  stage=hop.name, timeout=options.timeout, hide_gpu=True, work_dir=stage)
        except UserError as exc:  # a failed, crashed or timed-out hop, a missing extra, an artifact it refused
            shutil.rmtree(out_dir, ignore_errors=True)
            detail = getattr(exc, "detail", "")
            failures.append(HopFailure(hop.name, str(exc).removeprefix(f"{hop.name}: "), detail))
            notify(ProgressEvent("failed", hop.name, time.perf_counter() - started, str(exc)))
            continue
        seconds = time.perf_counter() - started
        for i, produced in enumerate(result.produced):
            digest, size = sha256_of(produced.path)
            artifacts.append(Artifact(
                format=hop.dst, path=produced.path.relative_to(stage).as_posix(), sha256=digest, bytes=size,
                made_from=hop.src, hop=hop.name, tool=result.tool, seconds=seconds,
                options=result.options, signature=produced.signature, precision=produced.precision,
                fallback=result.fallback, notes=result.notes,
            ))
            if i == 0:
                made[hop.dst] = (produced.path, produced.signature)
        notify(ProgressEvent("done", hop.name, seconds))
    return artifacts, failures
