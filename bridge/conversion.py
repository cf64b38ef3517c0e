"""`bridge.convert`: resolve the source, plan the route, run the hops as checked hops, publish.

Everything is written into a hidden staging directory beside the output directory and moved
into place at the end, with the manifest written last; a killed run leaves the previous output
or none (docs/safety.md). The hops themselves, their candidates and checks, are bridge.pipeline.
A hop that fails is recorded and its descendants are skipped; the artifacts made before it are kept.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bridge import __version__, memory, staging
from bridge.errors import BridgeError, HopError, QuantizeError, UnverifiedError
from bridge.formats import Format
from bridge.inputs import parse_example_inputs
from bridge.isolation import end_all
from bridge.manifest import Artifact, HopFailure, Manifest
from bridge.messages import SourceCode
from bridge.options import ConvertOptions
from bridge.pipeline import HopOutcome, Node, Pipeline, failures_of, publish_attempts
from bridge.progress import DONE, Notifier, ProgressEvent, log
from bridge.registry import DEFAULT_REGISTRY, Candidate, HopRegistry, HopSpec
from bridge.route import Route, parse_targets, plan
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry
from bridge.signature import Signature
from bridge.sources import DEFAULT_RESOLVERS, Prepared, SourceContext, SourceResolver, resolver_for


@dataclass(frozen=True)
class Conversion:
    """The result of `convert`: where everything went and what the manifest says."""

    out_dir: Path
    manifest: Manifest
    route: Route
    source_object: Any = field(default=None, compare=False, repr=False)
    """The live nn.Module or Keras model when one was passed in (not stored anywhere)."""
    factory: str | None = None
    """The ``package.module:factory`` this process was given as the source: verify may rebuild it."""
    cache_key: str | None = None
    """The key this conversion has in the conversion cache (bridge.cache); None with the cache off."""
    cached: bool = False
    """True when the artifacts were copied from the cache instead of made."""

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

    def render(self, kind: str) -> str:
        """The conversion as a report: ``json`` (the manifest), ``junit`` (a test case per check) or ``markdown``."""
        from bridge.conversion_report import render

        return render(self, kind)


DISTRIBUTION_OF = {"model_archiver": "torch-model-archiver", "tensorflow_serving": "tensorflow-serving-api", "ts": "torchserve"}
"""Modules whose distribution has another name; the rest are found under their own (scanning every installed
distribution's files to map them costs a second, which a cache hit cannot afford)."""


def tool_versions(registry: HopRegistry, runners: RunnerRegistry) -> dict[str, str]:
    """The installed version of every distribution the hops and runners drive (and numpy)."""
    modules = {m for hop in registry for m in hop.requires} | {m for r in runners for m in r.requires} | {"numpy"}
    versions: dict[str, str] = {}
    unknown = []
    for module in sorted(modules):
        try:
            found = importlib.metadata.distribution(DISTRIBUTION_OF.get(module, module))
        except importlib.metadata.PackageNotFoundError:
            unknown.append(module)
            continue
        versions[found.metadata["Name"]] = found.version
    owners = importlib.metadata.packages_distributions() if unknown else {}
    for name in sorted({d for m in unknown for d in owners.get(m, [m.replace("_", "-")])}):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return dict(sorted(versions.items()))


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
    max_memory: int | str | None = None,
    trust_pickle: bool | None = None,
    trust_code: bool | None = None,
    torch_exporter: str | None = None,
    check: bool | None = None,
    prefer: str | Sequence[str] | None = None,
    only: str | Sequence[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    tol: Mapping[str, float] | None = None,
    task: str | None = None,
    seq_len: int | None = None,
    image_size: int | None = None,
    dynamic_seq: bool | None = None,
    kv_cache: bool | None = None,
    quantize: str | Sequence[str] | None = None,
    calibration: str | Path | None = None,
    min_sqnr: float | None = None,
    min_top1: float | None = None,
    cache: bool | str | Path | None = None,
) -> Conversion:
    """Convert `model` to every format in `to`, keeping every intermediate artifact.

    `model` is a path (.pt2, .pt, .onnx, SavedModel dir, .keras, .tflite, a Hugging Face ``save_pretrained``
    folder), a ``package.module:factory`` reference, or a live nn.Module (a Transformers PreTrainedModel
    among them) / Keras model. `options` says how (`ConvertOptions`); each of its
    fields may also be given as a keyword (``opset=17``), which overrides it (None leaves it). `example_inputs` is an
    ``.npz`` path, a dict of arrays or a tuple of tensors; TorchScript and live modules need it or
    `input_shapes`. Every artifact is run and compared with its parent as it is made, trying each
    hop's candidates until one agrees (``check=False`` turns this off). With `strict` (the default) a
    hop with no artifact raises HopError, and a hop whose artifacts all drifted raises
    UnverifiedError, after the completed artifacts are published; the partial Conversion is on the
    exception's ``conversion`` attribute. A conversion done before with the same source bytes, targets, options and
    tool versions is copied from the cache (bridge.cache: `cache` is its directory, False for none, None for the
    default or ``BRIDGE_CACHE_DIR``). `max_memory` (bytes, or ``"8GB"``) is the budget the route is planned
    against and each hop held to (bridge.memory); without it, the memory available.
    """
    from bridge import cache as conversion_cache

    options = ConvertOptions.build(
        options, from_format=from_format, via=via, opset=opset, dynamic_batch=dynamic_batch, fp16=fp16,
        timeout=timeout, max_memory=memory.parse_size(max_memory) if max_memory is not None else None,
        trust_pickle=trust_pickle, trust_code=trust_code, torch_exporter=torch_exporter,
        check=check, prefer=prefer, only=only, atol=atol, rtol=rtol, tol=tol, task=task, seq_len=seq_len,
        image_size=image_size, dynamic_seq=dynamic_seq, kv_cache=kv_cache, quantize=quantize, calibration=calibration,
        min_sqnr=min_sqnr, min_top1=min_top1,
    )
    notify = Notifier(progress)
    specs = parse_example_inputs(example_inputs, input_shapes)
    resolver = resolver_for(model, resolvers)
    identified = resolver.identify(model, options)
    if identified.format is not None:  # plan now, so a route that cannot exist fails before any work
        plan(identified.format, parse_targets(to, identified.format, registry), via=options.via, registry=registry)
        if options.quantize:
            from bridge.quantize import check_targets

            check_targets(options.quantize, parse_targets(to, identified.format, registry))
    final_dir = Path(out_dir) if out_dir is not None else identified.default_out_dir
    stage = staging.prepare(final_dir, force=force)
    pipeline: Pipeline | None = None
    try:
        context = SourceContext(options, specs, stage, runners, notify)
        prepared = resolver.prepare(identified, context)
        if prepared.record.sequence_length is not None:  # a dynamic sequence axis: checks and hops use the example's length
            options = replace(options, seq_len=prepared.record.sequence_length)
        targets = parse_targets(to, prepared.format, registry)
        if options.quantize:  # calibration samples checked (or generated) and saved for the hops, in the source's layout
            from bridge.quantize import check_targets, save_calibration

            formats = check_targets(options.quantize, targets)
            calibration_path = stage / "quantize" / "calibration.npz"
            save_calibration(options, prepared.signature, calibration_path)
            options = replace(options, quantize_formats=formats, calibration_data=calibration_path)
        route = plan(prepared.format, targets, via=options.via, registry=registry)
        log.info("route: %s", route.describe())
        versions = tool_versions(registry, runners)
        store = conversion_cache.open_cache(cache)
        key = store.key(stage, targets, options, specs, {**versions, "route": route.describe(), "hops": ",".join(
            h.name for h in route.hops)}, __version__) if store is not None else None
        started = time.perf_counter()
        cached = store.restore(key, stage) if store is not None and key is not None else None
        if cached is not None:
            manifest = replace(cached, source=prepared.record)
            notify(DONE, f"cache {key[:12] if key else ''}", time.perf_counter() - started,
                   f"(hit in {store.location if store else ''}: no hop ran; --no-cache to convert again)")
        else:
            # Before the first hop: a route whose largest hop will not fit in memory is refused now, not OOM-killed later.
            code = SourceCode(identified.reference, (Path.cwd(),), specs) if identified.reference else None
            pipeline = Pipeline(stage, prepared.signature, options, registry, runners, notify, code)
            weights = memory.weight_bytes(stage / "source")
            memory.check_route([(h.name, h.tool, pipeline.takes_large_path(h, weights)) for h in route.hops], weights,
                               options.max_memory, identified.display)
            try:
                outcomes = pipeline.run(route, prepared.path, prepared.signature)
                routes = {t: " -> ".join(f.value for f in route.path_to(t)) for t in route.targets}
                if options.check and not options.via:
                    outcomes += _detours(pipeline, outcomes, route, prepared, routes)
            finally:
                pipeline.close()
            artifacts = publish_attempts(stage, outcomes)
            manifest = Manifest(
                source=prepared.record,
                artifacts=_parents_first(route, artifacts),
                route=tuple(routes[t] for t in route.targets),
                bridge_version=__version__,
                tool_versions=versions,
                failures=tuple(failures_of(outcomes)),
                checks=pipeline.checks,
            )
        manifest.write(stage)
        staging.publish(stage, final_dir)
    except BaseException as exc:
        # Nothing may write into the staging directory while it is removed: stop starting work, end
        # the child steps that run, let the tasks waiting on them return, then remove it.
        end_all()
        if pipeline is not None:
            pipeline.cancel()
            end_all()
        if isinstance(exc, BridgeError):
            _rescue_logs(stage, final_dir, exc)
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, QuantizeError) and isinstance(model, (str, Path)):
            raise QuantizeError(f"{model}: {exc}") from exc  # the user's file, not the hop's staged parent
        raise
    if store is not None and key is not None and cached is None and not manifest.failures:
        store.store(key, final_dir)  # only whole, verified conversions: a failure is tried again next time
    conversion = Conversion(final_dir, manifest, route, source_object=identified.live, factory=identified.reference,
                            cache_key=key, cached=cached is not None)
    if strict:
        raise_for_failures(conversion)
    return conversion


def candidates(
    model: Any,
    to: str | Format | Sequence[str | Format],
    options: ConvertOptions | None = None,
    *,
    example_inputs: Any = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    registry: HopRegistry = DEFAULT_REGISTRY,
    runners: RunnerRegistry = DEFAULT_RUNNERS,
    resolvers: Sequence[SourceResolver] = DEFAULT_RESOLVERS,
) -> list[tuple[HopSpec, tuple[Candidate, ...]]]:
    """Each hop on the route `convert` would take, with its candidates in the order they would be tried.

    Converts nothing. A factory's format is known only once it has run: give `from_format`, or it
    is built (in a child process, into a temporary directory) to find out.
    """
    options = options or ConvertOptions()
    resolver = resolver_for(model, resolvers)
    identified = resolver.identify(model, options)
    fmt = identified.format
    if fmt is None:
        with tempfile.TemporaryDirectory(prefix="bridge-candidates-") as tmp:
            context = SourceContext(options, parse_example_inputs(example_inputs, input_shapes), Path(tmp), runners)
            fmt = resolver.prepare(identified, context).format
    route = plan(fmt, parse_targets(to, fmt, registry), via=options.via, registry=registry)
    pipeline = Pipeline(Path(), Signature(), options, registry, runners, Notifier(None))
    local = identified.path
    weights = None if local is None else local.stat().st_size if local.is_file() else memory.weight_bytes(local)
    return [(hop, pipeline.candidates_for(hop, weights)) for hop in route.hops]


def _rescue_logs(stage: Path, final_dir: Path, exc: BridgeError) -> None:
    """Before the staging directory goes: keep its logs in the temporary directory, and point the error there."""
    logs = stage / "logs"
    if not logs.is_dir():
        return
    kept = Path(tempfile.mkdtemp(prefix=f"bridge-logs-{final_dir.name}-"))
    shutil.copytree(logs, kept, dirs_exist_ok=True)
    failed_log = getattr(exc, "log", None)
    if isinstance(failed_log, str) and Path(failed_log).is_relative_to(logs):
        exc.log = str(kept / Path(failed_log).relative_to(logs))  # type: ignore[attr-defined]
    log.info("logs of the stopped conversion kept in %s", kept)


def raise_for_failures(conversion: Conversion) -> None:
    """HopError when a hop made no artifact; UnverifiedError when one kept an artifact that did not verify."""
    failures = tuple(f for f in conversion.failures if f.resolved_by is None)
    if not failures:
        return
    first = next((f for f in failures if f.kept is None), None)
    more = f" ({len(failures) - 1} more failed or skipped)" if len(failures) > 1 else ""
    if first is not None:
        log = str(conversion.out_dir / first.log) if first.log else None
        raise HopError(f"hop {first.hop} failed: {first.error}{more}; completed artifacts are in {conversion.out_dir}"
                       + (f"; full log: {log}" if log else ""), stage=first.hop, detail=first.detail,
                       conversion=conversion, log=log)
    drift = failures[0]
    raise UnverifiedError(f"hop {drift.hop}: {drift.error}{more}; every attempt is in {conversion.manifest_path}",
                          stage=drift.hop, conversion=conversion,
                          log=str(conversion.out_dir / drift.log) if drift.log else None)


def _parents_first(route: Route, artifacts: Sequence[Artifact]) -> tuple[Artifact, ...]:
    """Artifacts ordered so that each comes after the one it was made from (then in route order)."""
    # A quantization of the float ONNX is made from an artifact of its own format: it comes after that one.
    made_from = {a.format: a.made_from for a in artifacts if a.made_from != a.format}

    def depth(fmt: Format) -> int:
        return 0 if fmt == route.source or fmt not in made_from else 1 + depth(made_from[fmt])

    formats = [route.source, *(h.dst for h in route.hops)]
    return tuple(sorted(artifacts, key=lambda a: (depth(a.format) + (a.made_from == a.format),
                                                  formats.index(a.format) if a.format in formats else len(formats), a.key)))


def _detours(pipeline: Pipeline, outcomes: list[HopOutcome], route: Route, prepared: Prepared,
             routes: dict[Format, str]) -> list[HopOutcome]:
    """For each target whose route has a hop with no candidate that verified, try one longer route."""
    walked = [o for top in outcomes for o in top.walk()]
    failed = {o.hop.name for o in walked if o.failure is not None}
    if not failed:
        return []
    made = {o.hop.dst: o.node for o in walked if o.node is not None and o.failure is None and o.artifacts}
    made[route.source] = Node(route.source, "source", prepared.path, prepared.signature, ran=pipeline.source_outputs)
    existing = {o.hop.dst for o in walked if o.artifacts}
    extra = []
    for target in route.targets:
        if target in made:
            continue
        detour = pipeline.detour(target, failed, made, existing)
        if detour is None:
            continue
        chain = detour.walk()
        if chain[-1].hop.dst != target or any(o.failure is not None for o in chain):
            pipeline.discard(detour)
            continue
        longer = " -> ".join([*(f.value for f in route.path_to(chain[0].hop.src)), *(o.hop.dst.value for o in chain)])
        for outcome in walked:  # the detour's artifact replaces the direct route's closest one
            if outcome.hop.dst == target:
                if outcome.attempt_dir is not None:
                    shutil.rmtree(outcome.attempt_dir, ignore_errors=True)
                outcome.attempt_dir, outcome.artifacts = None, []
                if outcome.failure is not None:
                    outcome.failure = replace(outcome.failure, kept=None, resolved_by=longer)
        routes[target] = longer
        made.update({o.hop.dst: o.node for o in chain if o.node is not None})
        existing |= {o.hop.dst for o in chain}
        extra.append(detour)
    return extra
