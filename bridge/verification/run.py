"""The verify pipeline: fixed inputs through every representation, in every runtime, on every device, then compare.

A representation is one artifact (or the source) run by one runtime on one device. Each runs in
its own child process (bridge.isolation), so a runtime that crashes is that representation's
error and the others are still verified. Feeds follow each artifact's signature (names, dtypes,
perm); outputs are mapped back to the source's names and layout before any comparison. A format
with several runtimes is run in each; the first (the format's reference runtime) is the one its
children are compared against, the others are named ``ARTIFACT:RUNTIME``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bridge import __version__, defaults, memory
from bridge import inputs as inputs_mod
from bridge.errors import BridgeError, DeviceUnavailableError, InputError
from bridge.formats import Format, RunnerSpec
from bridge.isolation import Prestarted, end_all, run_isolated
from bridge.manifest import MANIFEST_NAME, Manifest, inside, sha256_of
from bridge.messages import EmbeddingSizesRequest, RunRequest, RunResponse
from bridge.options import LocalizeOptions, VerifyOptions, tolerance_rules_of
from bridge.progress import DONE, FAILED, START, Notifier, ProgressEvent
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry
from bridge.signature import Signature
from bridge.sources import SourceKind
from bridge.steps import shared_turn
from bridge.verification.compare import (
    OutputDrift,
    ToleranceRules,
    compare_output,
    from_source_layout,
    missing_output,
    to_source_layout,
)
from bridge.verification.report import (
    ERROR,
    OK,
    UNAVAILABLE,
    Comparison,
    InputsRecord,
    Report,
    ReportPaths,
    Representation,
)
from bridge.verification.timing import LatencyStats

SOURCE = "source"
EAGER = "eager"


@dataclass(frozen=True)
class Subject:
    """Something to run: the source or one artifact."""

    name: str
    format: Format
    path: Path
    signature: Signature
    parent: str | None
    precision: str
    expected_sha256: str
    factory: str | None = None
    """For the eager module: the ``package.module:factory`` that builds it (no file)."""
    output_scales: Mapping[str, float] | None = None
    """A quantized artifact's source outputs -> the int8 scale each is dequantised from (max abs in its units)."""

    @property
    def location(self) -> str:
        return self.factory or str(self.path)


@dataclass(frozen=True)
class Slot:
    """One representation to run: a subject in one runtime on one device."""

    subject: Subject
    runner: RunnerSpec
    device: str
    primary: bool
    """The subject's reference runtime: its children are compared against this one."""

    @property
    def name(self) -> str:
        return self.subject.name if self.primary else f"{self.subject.name}:{self.runner.runtime}"


def cuda_present() -> bool:
    """Whether an NVIDIA driver is here at all; without one no runtime is asked about CUDA."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def subjects_of(manifest: Manifest, out_dir: Path, *, factory: str | None = None,
                trust_code: bool = False) -> tuple[list[Subject], tuple[str, ...]]:
    """The source (and, when allowed, its eager module) and every artifact, parents first; and notes.

    A factory source's module is rebuilt and run only when the user named the same reference
    (`factory`) or passed `trust_code`: bridge runs no code that a folder names.
    """
    src = manifest.source
    src_path = inside(out_dir, src.materialized or "", out_dir / MANIFEST_NAME, "source.materialized")
    subjects = []
    notes: tuple[str, ...] = ()
    if src.origin == SourceKind.FACTORY.value and src.format == Format.TORCH:
        if trust_code or factory == src.path:
            # The factory's eager nn.Module, rebuilt in its runner: the saved program is checked against it.
            subjects.append(Subject(EAGER, src.format, src_path, src.signature, None, "float32", "", factory=src.path))
        else:
            notes = (f"the eager source was not rebuilt: the manifest names the factory {src.path[:200]!r}, and bridge "
                     "runs no code that a folder names; to check the saved program against it, pass the same "
                     f"reference (--factory {src.path[:200]}) or --trust-code",)
    if src.pretrained is not None:
        # A Hugging Face folder's copy: the Transformers model rebuilt from its config and weights (no code
        # runs unless the config's auto_map asks for it, refused without --trust-code) checks the program.
        from bridge.huggingface import eager_reference

        directory = inside(out_dir, src.pretrained.directory, out_dir / MANIFEST_NAME, "source.pretrained.directory")
        subjects.append(Subject(EAGER, src.format, src_path, src.signature, None, "float32", "",
                                factory=eager_reference(directory, src.pretrained.task, src.pretrained.kv_cache)))
    parent_of_source = EAGER if subjects else None
    subjects.append(Subject(SOURCE, src.format, src_path, src.signature, parent_of_source, "float32", src.sha256))
    keys = {a.key for a in manifest.artifacts}
    for i, artifact in enumerate(manifest.artifacts):
        parent = artifact.made_from.value if artifact.made_from.value in keys else SOURCE
        path = inside(out_dir, artifact.path, out_dir / MANIFEST_NAME, f"artifacts[{i}].path")
        scales = artifact.options.get("output_scales")
        subjects.append(Subject(artifact.key, artifact.format, path, artifact.signature,
                                parent, artifact.precision, artifact.sha256,
                                output_scales=_scales(scales) if isinstance(scales, dict) else None))
    return subjects, notes


def _scales(recorded: Mapping[str, Any]) -> dict[str, float]:
    """The recorded output scales that are positive numbers (the manifest may come from anyone)."""
    return {str(k): float(v) for k, v in recorded.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")}


def check_digests(subjects: Sequence[Subject], allow_changed: bool) -> dict[str, str]:
    """Each subject's file against its manifest sha256: ``matches`` or ``changed`` (only with `allow_changed`).

    A changed file is an InputError naming it and both digests, before anything runs: the folder
    is not what convert wrote. A missing file is reported later, as that representation's error.
    """
    found: dict[str, str] = {}
    for subject in subjects:
        if subject.factory is not None or not subject.path.exists():
            continue
        digest, _ = sha256_of(subject.path)
        if digest == subject.expected_sha256:
            found[subject.name] = "matches"
        elif allow_changed:
            found[subject.name] = f"changed since convert (sha256 {digest}, manifest {subject.expected_sha256}); allowed"
        else:
            raise InputError(f"{subject.path}: changed since convert: sha256 {digest}, the manifest says "
                             f"{subject.expected_sha256}; convert again, or pass --allow-changed if you changed it on purpose")
    return found


def feeds_for(subject: Subject, source_inputs: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """The source inputs in `subject`'s names, layouts and dtypes (with the leading sample axis)."""
    feeds = {}
    for spec in subject.signature.inputs:
        array = from_source_layout(source_inputs[spec.source_name], spec.perm, leading=1)
        dtype = np.float32 if spec.dtype == "bfloat16" else np.dtype(spec.dtype)
        if spec.quantization is not None:  # real values to the integers the artifact takes, with its recorded scale
            scale, zero_point = spec.quantization
            info = np.iinfo(dtype)
            array = np.clip(np.round(array.astype(np.float64) / scale) + zero_point, info.min, info.max)
        feeds[spec.name] = np.ascontiguousarray(array.astype(dtype, copy=False))
    return feeds


def _outputs_in_source_layout(subject: Subject, raw: Mapping[str, NDArray[Any]], samples: int) -> dict[str, NDArray[Any]]:
    out = {}
    for spec in subject.signature.outputs:
        per_sample = [raw[f"{i}/{spec.name}"] for i in range(samples)]
        shapes = sorted({a.shape for a in per_sample})
        if len(shapes) > 1:  # TopK with k an input, NonZero, Tile with its repeats an input
            raise InputError(f"output {spec.source_name!r} has another shape for each sample ({', '.join(map(str, shapes[:3]))}): "
                             "its size depends on the input values; verify it on --inputs whose samples agree on that size")
        stacked = np.stack(per_sample)
        if spec.quantization is not None:  # integers back to the real values they stand for
            scale, zero_point = spec.quantization
            stacked = ((stacked.astype(np.float64) - zero_point) * scale).astype(np.float32)
        out[spec.source_name] = to_source_layout(stacked, spec.perm, leading=1)
    return out


def _embedding_sizes(subjects: Sequence[Subject], timeout: float | None) -> dict[str, int]:
    """Vocabulary sizes of integer inputs read from the ONNX artifact (Gather on an initializer)."""
    onnx_subject = next((s for s in subjects if s.format == Format.ONNX), None)
    if onnx_subject is None or not any(t.dtype.startswith(("int", "uint")) for t in onnx_subject.signature.inputs):
        return {}
    try:
        result = run_isolated(EmbeddingSizesRequest(onnx_subject.path), stage="read embedding sizes",
                              timeout=timeout, hide_gpu=True)
    except BridgeError:
        return {}  # the bound then falls back to --int-high's default: the comparison still runs
    by_name = {t.name: t.source_name for t in onnx_subject.signature.inputs}
    return {by_name.get(k, k): int(v) for k, v in result.sizes.items()}


def _prepare_inputs(manifest: Manifest, subjects: Sequence[Subject],
                    options: VerifyOptions) -> tuple[dict[str, NDArray[Any]], bool]:
    signature = manifest.source.signature
    if options.inputs is not None:
        return inputs_mod.check_inputs(inputs_mod.load_npz(options.inputs), signature, options.inputs), False
    highs = {} if options.int_high is not None else _embedding_sizes(subjects, options.timeout)
    if options.int_high is None and manifest.source.pretrained is not None:
        highs.update(_pretrained_highs(manifest, subjects))
    return inputs_mod.generate(signature, seed=options.seed, samples=options.samples,
                               int_high=options.int_high or defaults.INT_HIGH, int_highs=highs,
                               length=manifest.source.sequence_length), True


def _pretrained_highs(manifest: Manifest, subjects: Sequence[Subject]) -> dict[str, int]:
    """Token ids below the vocabulary and token types below their count, from the folder's copy of config.json."""
    from bridge.huggingface import int_highs, parse_eager_reference, read_pretrained

    eager = next((s for s in subjects if s.name == EAGER and s.factory), None)
    if eager is None or eager.factory is None:
        return {}
    directory, task, _ = parse_eager_reference(eager.factory)
    return int_highs(read_pretrained(directory, task=task, trust_code=True).config)


def output_dir_for(target: str | Path | None, *, converting: bool = False) -> Path | None:
    """The conversion folder `target` names: itself, or with None the only one in the current directory.

    Returns None when `target` is a model to convert first (`converting`: the caller was given ``--to``).
    """
    if target is None:
        return find_output_dir(Path.cwd())
    path = Path(target)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path
    if converting:
        return None
    raise InputError(f"{target}: not a bridge output directory (no {MANIFEST_NAME}); give --to FORMAT to convert it first")


def find_output_dir(cwd: Path) -> Path:
    """The only ``bridge convert`` output directory in `cwd`, or an InputError listing the choices."""
    found = sorted(p for p in cwd.iterdir() if p.is_dir() and (p / MANIFEST_NAME).is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"{cwd}: no bridge output directory here (none holds a {MANIFEST_NAME}); give DIR or MODEL --to FORMAT")
    raise InputError(f"{cwd}: several output directories ({', '.join(p.name for p in found)}); say which: bridge verify DIR")


def inputs_destination(out_dir: Path, options: VerifyOptions, reports: ReportPaths | None, area: str = "verify") -> Path:
    """Where the inputs used are saved: `save_inputs`, else beside the JSON report, else ``DIR/AREA/inputs.npz``."""
    if options.save_inputs is not None:
        return options.save_inputs
    if reports is not None and reports.json is not None and str(reports.json) != "-":
        return reports.json.with_name(reports.json.stem + ".inputs.npz")
    return out_dir / area / "inputs.npz"


def verify(
    target: Any = None,
    options: VerifyOptions | None = None,
    *,
    reports: ReportPaths | None = None,
    runners: RunnerRegistry = DEFAULT_RUNNERS,
    progress: Callable[[ProgressEvent], None] | None = None,
    inputs: str | Path | None = None,
    seed: int | None = None,
    samples: int | None = None,
    int_high: int | None = None,
    devices: Sequence[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    tol: Mapping[str, float] | None = None,
    latency_runs: int | None = None,
    warmup: int | None = None,
    timeout: float | None = None,
    save_inputs: str | Path | None = None,
    trust_pickle: bool | None = None,
    trust_code: bool | None = None,
    allow_unavailable: bool | None = None,
    allow_changed: bool | None = None,
    factory: str | None = None,
    localize: LocalizeOptions | None = None,
    min_sqnr: float | None = None,
    min_top1: float | None = None,
    quantized_layers: int | None = None,
    mlflow: bool = False,
) -> Report:
    """Verify a Conversion or an output directory of `bridge convert` (None: the only one here).

    `options` says how (`VerifyOptions`); each of its fields may also be given as a keyword, which
    overrides it. Inputs come from `inputs` (an ``.npz`` keyed by source input names) or are
    generated from `seed`; either way they are saved with their sha256 so a later run can replay
    them. `reports` names JSON/JUnit/Markdown/HTML files to write (atomically) once the report is made.
    With `mlflow`, the report is logged to MLflow (the active run or a new one: bridge.mlflow_log).
    """
    options = VerifyOptions.build(
        options, inputs=inputs, seed=seed, samples=samples, int_high=int_high, devices=devices, atol=atol,
        rtol=rtol, tol=tol, latency_runs=latency_runs, warmup=warmup, timeout=timeout, save_inputs=save_inputs,
        trust_pickle=trust_pickle, trust_code=trust_code, allow_unavailable=allow_unavailable,
        allow_changed=allow_changed, factory=factory, localize=localize, min_sqnr=min_sqnr, min_top1=min_top1,
        quantized_layers=quantized_layers,
    )
    out_dir = Path(target.out_dir) if hasattr(target, "out_dir") else output_dir_for(target)
    assert out_dir is not None
    report = run_verify(out_dir, options, reports=reports, runners=runners, progress=progress,
                        named=options.factory or getattr(target, "factory", None))
    if mlflow:
        from bridge.mlflow_log import log_report

        log_report(report)
    return report


def run_verify(out_dir: Path, options: VerifyOptions, *, reports: ReportPaths | None = None,
               runners: RunnerRegistry = DEFAULT_RUNNERS, progress: Callable[[ProgressEvent], None] | None = None,
               named: str | None = None, area: str = "verify") -> Report:
    """`verify` once its target is a folder; its own files (inputs, logs) go to ``DIR/AREA/``."""
    notify = Notifier(progress)
    manifest = Manifest.read(out_dir)
    subjects, notes = subjects_of(manifest, out_dir, factory=named, trust_code=options.trust_code)
    digests = check_digests(subjects, options.allow_changed)
    if options.localize is not None:
        from bridge.localization.run import select_hops

        select_hops(subjects, options.localize.hop_pair())  # an unknown --hop is known before anything runs
        output_names = [s.name for s in manifest.source.signature.outputs]
        if options.localize.output is not None and options.localize.output not in output_names:
            raise InputError(f"--output {options.localize.output}: the model has no such output; its outputs are "
                             f"{', '.join(output_names)}")
    source_inputs, generated = _prepare_inputs(manifest, subjects, options)
    count = next(iter(source_inputs.values())).shape[0]
    if options.localize is not None and options.localize.sample is not None and options.localize.sample >= count:
        raise InputError(f"--sample {options.localize.sample}: there are {count} samples (numbered from 0)")
    inputs_path = inputs_destination(out_dir, options, reports, area)
    logs_dir = out_dir / area / "logs"
    if reports is not None:
        reports.check()  # before any work: a report that cannot be written is known now

    representations: list[Representation] = []
    outputs: dict[str, dict[str, NDArray[Any]]] = {}
    slots: list[Slot] = []
    with tempfile.TemporaryDirectory(prefix="bridge-verify-") as tmp:
        # Rows in a fixed order (subjects, runtimes, devices), whatever order the runs end in.
        planned: list[Representation | tuple[Slot, Path]] = []
        for subject in subjects:
            feeds_path = Path(tmp, f"{subject.name}.inputs.npz")
            inputs_mod.write_npz(feeds_path, feeds_for(subject, source_inputs))
            subject_runners = runners.for_format(subject.format)
            if not subject_runners:
                planned.extend(Representation(
                    subject.name, subject.format.value, device, "-", subject.location, ERROR,
                    error=f"no runtime is registered for {subject.format.value}; it was converted but cannot be run",
                ) for device in options.devices)
                continue
            planned.extend((Slot(subject, runner, device, primary=index == 0), feeds_path)
                           for index, runner in enumerate(subject_runners) for device in options.devices)
        width = side_by_side(subjects, sum(1 for p in planned if isinstance(p, tuple)))
        timing_lock = Path(tmp, "timing.lock") if width > 1 else None

        def run_one(slot: Slot, feeds_path: Path) -> tuple[Representation, dict[str, NDArray[Any]] | None]:
            step = f"run {slot.name} on {slot.device}"
            notify(START, step)
            started = time.perf_counter()
            log_name = f"{slot.name.replace(':', '_')}.{slot.device}.log"
            rep, result = run_representation(slot, feeds_path, Path(tmp), count, runs=options.latency_runs,
                                             warmup=options.warmup, timeout=options.timeout,
                                             trust_pickle=options.trust_pickle, trust_code=options.trust_code,
                                             digest=digests.get(slot.subject.name, ""),
                                             import_paths=(Path.cwd(),) if named else (),
                                             log_to=Path(tmp, "logs", log_name), timing_lock=timing_lock)
            if rep.log is not None:  # where it will be once the run is over
                rep = replace(rep, log=str(logs_dir / log_name))
            notify(DONE if rep.status == OK else FAILED, step, time.perf_counter() - started,
                   "" if rep.status == OK else f"{rep.status}: {rep.error}")
            return rep, result

        pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="bridge-verify")
        try:
            started_runs = [p if isinstance(p, Representation) else (p[0], pool.submit(run_one, *p)) for p in planned]
            for item in started_runs:
                if isinstance(item, Representation):
                    representations.append(item)
                    continue
                slot, future = item
                rep, result = future.result()
                representations.append(rep)
                slots.append(slot)
                if result is not None:
                    outputs[_key(slot.name, slot.device)] = result
        except BaseException:
            # Ctrl-C or a bug: start nothing more and end the children that run, so the threads return.
            pool.shutdown(wait=False, cancel_futures=True)
            end_all()
            raise
        finally:
            pool.shutdown(wait=True)
        # Logs, inputs and reports are written only now: an interrupted verify leaves nothing behind.
        if Path(tmp, "logs").is_dir():
            shutil.rmtree(logs_dir, ignore_errors=True)
            logs_dir.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(tmp, "logs"), logs_dir)
    if options.inputs is not None and options.inputs.resolve() == inputs_path.resolve():
        digest = inputs_mod.file_sha256(inputs_path)
    else:
        digest = inputs_mod.save_npz(source_inputs, inputs_path)
    record = InputsRecord(options.seed if generated else None, count, digest, str(inputs_path), generated)
    rules = tolerance_rules_of(options)
    hops, cumulative, device_checks = _compare_all(slots, outputs, manifest.source.signature, rules)
    compared = {c.dst for c in (*hops, *cumulative)}
    # A second runtime that is not here (tensorflow_model_server) leaves its artifact compared all the same.
    primaries = {s.subject.name for s in slots if s.primary and s.name in compared}
    uncompared = tuple(dict.fromkeys(s.name for s in slots if s.subject.name not in (SOURCE, EAGER) and s.name not in compared
                                     and not (not s.primary and s.subject.name in primaries)))
    localization: tuple[Any, ...] = ()
    if options.localize is not None:
        from bridge.localization.run import localize_comparisons

        notify(START, "localise")
        started = time.perf_counter()
        localization = localize_comparisons(subjects, hops, outputs, source_inputs, manifest, out_dir, options)
        notify(DONE, "localise", time.perf_counter() - started)
    layers: tuple[Any, ...] = ()
    if options.quantized_layers and any(s.precision != "float32" for s in subjects):
        from bridge.localization.quantized import quantized_layers

        notify(START, "per-layer quantization error")
        started = time.perf_counter()
        layers = quantized_layers(subjects, hops, outputs, source_inputs, manifest, out_dir, options,
                                  options.quantized_layers)
        notify(DONE, "per-layer quantization error", time.perf_counter() - started)
    report = Report(
        manifest=str(out_dir / MANIFEST_NAME), inputs=record, representations=tuple(representations),
        hops=tuple(hops), cumulative=tuple(cumulative), devices=tuple(device_checks),
        bridge_version=__version__, notes=(*notes, *(() if generated else (f"inputs from {options.inputs}",))),
        uncompared=uncompared, allow_unavailable=options.allow_unavailable, localization=localization,
        quantization_layers=layers,
    )
    if reports is not None:
        report.write_all(reports)
    return report


def side_by_side(subjects: Sequence[Subject], runs: int) -> int:
    """How many representations verify runs at once: one per core and one more (`defaults.parallel_runs()`), and
    only as many as fit in half the memory available, each reckoned at 1 GiB (a framework loaded) plus
    three times the largest artifact. A big model's representations run one at a time, each freed
    before the next. Their timed runs never overlap anything (TimingTurn)."""
    if runs <= 1:
        return 1
    largest = max((_size_of(s.path) or 0 for s in subjects if s.factory is None), default=0)
    free, _ = memory.available()
    return max(1, min(defaults.parallel_runs(), runs, free // 2 // (memory.GB + 3 * largest)))


def _key(name: str, device: str) -> str:
    return f"{name}@{device}"


def run_representation(slot: Slot, feeds_path: Path, work: Path, samples: int, *, runs: int, warmup: int,
                       timeout: float | None = None, trust_pickle: bool = False, trust_code: bool = False,
                       digest: str = "", import_paths: tuple[Path, ...] = (), tag: str = "",
                       nice: int = 0, log_to: Path | None = None,
                       timing_lock: Path | None = None,
                       warm: Prestarted | None = None) -> tuple[Representation, dict[str, NDArray[Any]] | None]:
    """Run every sample of `feeds_path` through one representation in a child process, then time `runs` calls.

    Returns its report row and its outputs in the source's names and layout (None when it did not run). `warm`
    is a child started for it beforehand (bridge.isolation.Prestarted); it is closed when it is not used.
    """
    refused = not_runnable(slot, digest)
    if refused is not None:
        if warm is not None:
            warm.close()
        return refused, None
    stage = f"run {slot.name} on {slot.device}"
    # Side by side: the shared lock is taken before the child starts (not while another is timed).
    fd = shared_turn(timing_lock) if timing_lock is not None else None
    if fd is not None and warm is not None:
        warm.close()  # started without the lock's descriptor, which a timed child is handed at its start
        warm = None
    request = run_request(slot, feeds_path, work, samples, runs=runs, warmup=warmup, trust_pickle=trust_pickle,
                          trust_code=trust_code, import_paths=import_paths, tag=tag, timing_fd=fd)
    try:
        result = run_isolated(request, stage=stage, timeout=timeout, hide_gpu=slot.device == "cpu", nice=nice,
                              log_to=log_to, pass_fds=(fd,) if fd is not None else (), preload=slot.runner.modules,
                              hidden=slot.runner.hidden, warm=warm)
    except BridgeError as exc:
        return failed_row(slot, exc, stage, digest), None
    finally:
        if fd is not None:
            os.close(fd)
    return finished_row(slot, request, result, digest, str(log_to) if log_to else None)


def _row(slot: Slot, digest: str, status: str, **more: Any) -> Representation:
    subject = slot.subject
    return Representation(slot.name, subject.format.value, slot.device, slot.runner.runtime, subject.location, status,
                          digest=digest, bytes=_size_of(subject.path) if subject.factory is None else None, **more)


def not_runnable(slot: Slot, digest: str = "") -> Representation | None:
    """The row of a representation that cannot run here (device, runtime or file missing); None when it can."""
    subject, device, runner = slot.subject, slot.device, slot.runner
    if device not in runner.devices:
        return _row(slot, digest, UNAVAILABLE, error=f"{device}: not available ({runner.runtime} runs on {', '.join(runner.devices)} only)")
    if device != "cpu" and not cuda_present():
        return _row(slot, digest, UNAVAILABLE, error=f"{device}: not available (no NVIDIA driver on this machine)")
    missing = runner.missing()
    if missing:
        # A program that is not there (a server, node) makes the runtime unavailable here, like an absent device;
        # a Python module pip would install is an error.
        modules = [m for m in missing if m in runner.requires]
        return _row(slot, digest, ERROR if modules else UNAVAILABLE,
                    error=f"the {runner.runtime} runtime needs {', '.join(missing)}: {runner.install_hint}")
    if subject.factory is None and not subject.path.exists():
        return _row(slot, digest, ERROR, error=f"{subject.path}: missing; convert again")
    return None


def run_request(slot: Slot, feeds_path: Path, work: Path, samples: int, *, runs: int, warmup: int,
                trust_pickle: bool = False, trust_code: bool = False, import_paths: tuple[Path, ...] = (),
                tag: str = "", timing_fd: int | None = None) -> RunRequest:
    """The child step that runs one representation (its outputs go to a file in `work` named after it)."""
    subject = slot.subject
    out_path = work / f"{slot.name.replace(':', '_')}.{slot.device}{tag}.outputs.npz"
    return RunRequest(slot.runner, subject.path, slot.device, feeds_path, out_path, samples, runs, warmup,
                      input_specs=_concrete(subject.signature), factory=subject.factory, import_paths=import_paths,
                      trust_pickle=trust_pickle, trust_code=trust_code, timing_fd=timing_fd)


def failed_row(slot: Slot, exc: BridgeError, stage: str, digest: str = "") -> Representation:
    """The row of a representation whose step ended with `exc`."""
    status = UNAVAILABLE if isinstance(exc, DeviceUnavailableError) else ERROR
    return _row(slot, digest, status, error=str(exc).removeprefix(f"{stage}: "), log=getattr(exc, "log", None))


def finished_row(slot: Slot, request: RunRequest, result: RunResponse, digest: str = "",
                 log: str | None = None) -> tuple[Representation, dict[str, NDArray[Any]] | None]:
    """The row and outputs (in the source's names and layout) of a representation whose step answered `result`."""
    subject = slot.subject
    with np.load(request.outputs) as data:
        raw = {name: data[name] for name in data.files}
    try:
        outputs = _outputs_in_source_layout(subject, raw, request.samples)
    except InputError as exc:
        return _row(slot, digest, ERROR, error=str(exc), log=log), None
    batch = next((int(s.shape[0]) for s in subject.signature.inputs if s.shape and isinstance(s.shape[0], int)), 1)
    latency = LatencyStats.from_ns(result.latency_ns, batch) if result.latency_ns else None
    model_latency = LatencyStats.from_ns(result.model_latency_ns, batch) if result.model_latency_ns else None
    return _row(slot, digest, OK, latency=latency, model_latency=model_latency, provider=result.provider,
                notes=result.notes, log=log), outputs


def _size_of(path: Path) -> int | None:
    """A file's size, or a folder's files together; None when it is not there."""
    try:
        return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None


def _concrete(signature: Signature) -> tuple[Any, ...]:
    """Input specs with symbolic dimensions set to 1, for runtimes that need shapes (TorchScript)."""
    from bridge.signature import TensorSpec

    return tuple(TensorSpec(s.name, tuple(d if isinstance(d, int) else 1 for d in s.shape), s.dtype)
                 for s in signature.inputs)


def compare_outputs(src: str, dst: str, expected: Mapping[str, NDArray[Any]], actual: Mapping[str, NDArray[Any]],
                    source: Signature, rules: ToleranceRules, precision: str,
                    same_nonfinite_agrees: bool = False,
                    scales: Mapping[str, float] | None = None) -> tuple[OutputDrift, ...]:
    """Every source output of `dst` against `src`, with the tolerance for its dtype (or the precision's);
    `scales`: a quantized `dst`'s output scales, for the max abs in their units."""
    drifts = []
    for spec in source.outputs:
        dtype = precision if precision != "float32" else spec.dtype
        tolerance = rules.for_output(spec.name, dtype)
        if spec.name not in expected or spec.name not in actual:
            missing = dst if spec.name not in actual else src
            drifts.append(missing_output(spec.name, tolerance, f"{missing} has no output for source output {spec.name!r}"))
            continue
        drifts.append(compare_output(spec.name, expected[spec.name], actual[spec.name], tolerance,
                                     same_nonfinite_agrees=same_nonfinite_agrees,
                                     scale=(scales or {}).get(spec.name)))
    return tuple(drifts)


def _compare(kind: str, src: Slot, dst: Slot, device: str, expected: Mapping[str, NDArray[Any]],
             actual: Mapping[str, NDArray[Any]], source: Signature, rules: ToleranceRules, precision: str) -> Comparison:
    scales = dst.subject.output_scales if kind != "device" else None
    drifts = compare_outputs(src.name, dst.name, expected, actual, source, rules, precision, scales=scales)
    return Comparison(kind, src.name, dst.name, device, drifts)


def _compare_all(slots: Sequence[Slot], outputs: Mapping[str, dict[str, NDArray[Any]]], source: Signature,
                 rules: ToleranceRules) -> tuple[list[Comparison], list[Comparison], list[Comparison]]:
    hops, cumulative, device_checks = [], [], []
    primary = {(s.subject.name, s.device): s for s in slots if s.primary}
    for slot in slots:
        mine = outputs.get(_key(slot.name, slot.device))
        if mine is None:
            continue
        subject, device = slot.subject, slot.device
        parent_name = subject.parent if slot.primary else subject.name  # a second runtime is checked against the first
        parent = primary.get((parent_name, device)) if parent_name is not None else None
        if parent is not None and parent is not slot:
            expected = outputs.get(_key(parent.name, device))
            precision = defaults.combined_precision(subject.precision, parent.subject.precision)
            if expected is not None:
                hops.append(_compare("hop", parent, slot, device, expected, mine, source, rules, precision))
        origin = primary.get((SOURCE, device))
        if origin is not None and subject.name not in (SOURCE, EAGER):
            expected = outputs.get(_key(origin.name, device))
            if expected is not None:
                cumulative.append(_compare("cumulative", origin, slot, device, expected, mine, source, rules,
                                           subject.precision))
        if device != "cpu":
            cpu = outputs.get(_key(slot.name, "cpu"))
            if cpu is not None:
                device_checks.append(_compare("device", slot, slot, device, cpu, mine, source, rules, subject.precision))
    return hops, cumulative, device_checks
