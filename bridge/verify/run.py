"""The verify pipeline: fixed inputs through every representation on every device, then compare.

Each representation runs in its own child process (bridge.isolation), so a runtime that crashes
is that representation's error and the others are still verified. Feeds follow each artifact's
signature (names, dtypes, perm); outputs are mapped back to the source's names and layout before
any comparison.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge import __version__, defaults, formats, inputs as inputs_mod
from bridge.errors import BridgeError, InputError
from bridge.formats import Format
from bridge.isolation import run_isolated
from bridge.manifest import Manifest, sha256_of
from bridge.runtimes.base import RUNTIME_NAMES
from bridge.signature import Signature
from bridge.verify.compare import ToleranceRules, compare_output, from_source_layout, missing_output, to_source_layout
from bridge.verify.report import ERROR, OK, UNAVAILABLE, Comparison, InputsRecord, Report, Representation
from bridge.verify.timing import LatencyStats

SOURCE = "source"
EAGER = "eager"


@dataclass(frozen=True)
class _Subject:
    """Something to run: the source or one artifact."""

    name: str
    format: Format
    path: Path
    signature: Signature
    parent: str | None
    precision: str
    expected_sha256: str
    reference: str | None = None
    """For the eager module: the ``package.module:factory`` that builds it (no file)."""

    @property
    def location(self) -> str:
        return self.reference or str(self.path)


def cuda_present() -> bool:
    """Whether an NVIDIA driver is here at all; without one no runtime is asked about CUDA."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def _subjects(manifest: Manifest, out_dir: Path) -> list[_Subject]:
    src = manifest.source
    src_path = out_dir / src.materialized if src.materialized else Path(src.path)
    subjects = []
    if src.materialized and src.format == Format.TORCH and formats.is_reference(src.path):
        # The factory's eager nn.Module, rebuilt in its runner: the saved program is checked against it.
        subjects.append(_Subject(EAGER, src.format, src_path, src.signature, None, "float32", "", reference=src.path))
    parent_of_source = EAGER if subjects else None
    subjects.append(_Subject(SOURCE, src.format, src_path, src.signature, parent_of_source, "float32", src.sha256))
    keys = {a.key for a in manifest.artifacts}
    for artifact in manifest.artifacts:
        parent = artifact.made_from.value if artifact.made_from.value in keys else SOURCE
        subjects.append(_Subject(artifact.key, artifact.format, out_dir / artifact.path, artifact.signature,
                                 parent, artifact.precision, artifact.sha256))
    return subjects


def _feeds(subject: _Subject, source_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in subject.signature.inputs:
        array = source_inputs[spec.source_name]
        array = from_source_layout(array, spec.perm, leading=1)
        dtype = np.float32 if spec.dtype == "bfloat16" else np.dtype(spec.dtype)
        feeds[spec.name] = np.ascontiguousarray(array.astype(dtype, copy=False))
    return feeds


def _input_specs(signature: Signature) -> dict[str, list[Any]]:
    return {s.name: [[d if isinstance(d, int) else 1 for d in s.shape], s.dtype] for s in signature.inputs}


def _outputs_in_source_layout(subject: _Subject, raw: Mapping[str, np.ndarray], samples: int) -> dict[str, np.ndarray]:
    out = {}
    for spec in subject.signature.outputs:
        stacked = np.stack([raw[f"{i}/{spec.name}"] for i in range(samples)])
        out[spec.source_name] = to_source_layout(stacked, spec.perm, leading=1)
    return out


def _embedding_sizes(subjects: Sequence[_Subject], timeout: float | None) -> dict[str, int]:
    """Vocabulary sizes of integer inputs read from the ONNX artifact (Gather on an initializer)."""
    onnx_subject = next((s for s in subjects if s.format == Format.ONNX), None)
    if onnx_subject is None or not any(t.dtype.startswith(("int", "uint")) for t in onnx_subject.signature.inputs):
        return {}
    try:
        result = run_isolated("embedding_sizes", {"path": str(onnx_subject.path)}, stage="read embedding sizes",
                              timeout=timeout, hide_gpu=True)
    except BridgeError:
        return {}
    by_name = {t.name: t.source_name for t in onnx_subject.signature.inputs}
    return {by_name.get(k, k): int(v) for k, v in result["sizes"].items()}


def _prepare_inputs(manifest: Manifest, subjects: Sequence[_Subject], inputs: str | Path | None, *, seed: int,
                    samples: int, int_high: int | None, timeout: float | None) -> tuple[dict[str, np.ndarray], bool]:
    signature = manifest.source.signature
    if inputs is not None:
        path = Path(inputs)
        return inputs_mod.check_inputs(inputs_mod.load_npz(path), signature, path), False
    if samples < 1:
        raise InputError(f"--samples {samples}: need at least one sample")
    highs = {} if int_high is not None else _embedding_sizes(subjects, timeout)
    return inputs_mod.generate(signature, seed=seed, samples=samples,
                               int_high=int_high or defaults.INT_HIGH, int_highs=highs), True


def _save_inputs(arrays: Mapping[str, np.ndarray], path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return inputs_mod.file_sha256(path)


def verify(
    target: Any,
    *,
    inputs: str | Path | None = None,
    seed: int = defaults.SEED,
    samples: int = defaults.SAMPLES,
    int_high: int | None = None,
    devices: Sequence[str] = ("cpu", "cuda"),
    atol: float | None = None,
    rtol: float | None = None,
    tol: Mapping[str, float] | None = None,
    latency_runs: int = defaults.LATENCY_RUNS,
    warmup: int = defaults.WARMUP_RUNS,
    timeout: float | None = None,
    save_inputs: str | Path | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Verify a Conversion or an output directory of `bridge convert`.

    Inputs come from `inputs` (an ``.npz`` keyed by source input names, ``[samples, *shape]``)
    or are generated from `seed`; either way they are saved (`save_inputs`, default
    ``DIR/verify/inputs.npz``) with their sha256 so a later run can replay them.
    """
    notify = progress or (lambda message: None)
    out_dir = Path(getattr(target, "out_dir", target))
    manifest = Manifest.read(out_dir)
    subjects = _subjects(manifest, out_dir)
    source_inputs, generated = _prepare_inputs(manifest, subjects, inputs, seed=seed, samples=samples,
                                               int_high=int_high, timeout=timeout)
    count = next(iter(source_inputs.values())).shape[0]
    inputs_path = Path(save_inputs) if save_inputs else out_dir / "verify" / "inputs.npz"
    if inputs is not None and Path(inputs).resolve() == inputs_path.resolve():
        digest = inputs_mod.file_sha256(inputs_path)
    else:
        digest = _save_inputs(source_inputs, inputs_path)
    record = InputsRecord(seed if generated else None, count, digest, str(inputs_path), generated)
    rules = ToleranceRules(atol, rtol, dict(tol) if tol else None)

    notes: list[str] = []
    representations: list[Representation] = []
    outputs: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory(prefix="bridge-verify-") as tmp:
        for subject in subjects:
            rep_notes = _integrity_notes(subject)
            feeds_path = Path(tmp, f"{subject.name}.inputs.npz")
            np.savez(feeds_path, **_feeds(subject, source_inputs))
            for device in devices:
                notify(f"run {subject.name} on {device}")
                rep, result = _run_one(subject, device, feeds_path, Path(tmp), count, latency_runs, warmup,
                                       timeout, trust_pickle, trust_code, rep_notes)
                representations.append(rep)
                if result is not None:
                    outputs[(subject.name, device)] = result
    hops, cumulative, device_checks = _compare_all(subjects, devices, outputs, manifest.source.signature, rules)
    if not generated:
        notes.append(f"inputs from {inputs}")
    return Report(
        manifest=str(out_dir / "manifest.json"), inputs=record, representations=tuple(representations),
        hops=tuple(hops), cumulative=tuple(cumulative), devices=tuple(device_checks),
        bridge_version=__version__, notes=tuple(notes),
    )


def _integrity_notes(subject: _Subject) -> tuple[str, ...]:
    if subject.reference or not subject.path.exists():
        return ()
    digest, _ = sha256_of(subject.path)
    if digest != subject.expected_sha256:
        return (f"{subject.path} changed since convert (sha256 {digest[:12]} != manifest {subject.expected_sha256[:12]})",)
    return ()


def _run_one(subject: _Subject, device: str, feeds_path: Path, tmp: Path, samples: int, runs: int, warmup: int,
             timeout: float | None, trust_pickle: bool, trust_code: bool,
             notes: tuple[str, ...]) -> tuple[Representation, dict[str, np.ndarray] | None]:
    runtime = RUNTIME_NAMES[subject.format]
    base = {"name": subject.name, "format": subject.format.value, "device": device, "runtime": runtime,
            "path": subject.location, "notes": notes}
    if device != "cpu" and not cuda_present():
        return Representation(status=UNAVAILABLE, error=f"{device}: not available (no NVIDIA driver on this machine)", **base), None
    if subject.reference is None and not subject.path.exists():
        return Representation(status=ERROR, error=f"{subject.path}: missing; convert again", **base), None
    out_path = tmp / f"{subject.name}.{device}.outputs.npz"
    try:
        result = run_isolated("run", {
            "format": subject.format.value, "path": subject.location, "device": device,
            "inputs": str(feeds_path), "outputs": str(out_path), "samples": samples,
            "runs": runs, "warmup": warmup, "input_specs": _input_specs(subject.signature),
            "trust_pickle": trust_pickle, "trust_code": trust_code,
        }, stage=f"run {subject.name} on {device}", timeout=timeout, hide_gpu=device == "cpu")
    except BridgeError as exc:
        message = str(exc)
        status = UNAVAILABLE if "not available" in message else ERROR
        return Representation(status=status, error=message.removeprefix(f"run {subject.name} on {device}: "), **base), None
    with np.load(out_path) as data:
        raw = {name: data[name] for name in data.files}
    batch = next((int(s.shape[0]) for s in subject.signature.inputs if s.shape and isinstance(s.shape[0], int)), 1)
    latency = LatencyStats.from_ns(result["latency_ns"], batch) if result["latency_ns"] else None
    return Representation(status=OK, latency=latency, **base), _outputs_in_source_layout(subject, raw, samples)


def _compare(kind: str, src: str, dst: str, device: str, expected: Mapping[str, np.ndarray],
             actual: Mapping[str, np.ndarray], source: Signature, rules: ToleranceRules, precision: str) -> Comparison:
    drifts = []
    for spec in source.outputs:
        dtype = "float16" if precision == "float16" else spec.dtype
        tolerance = rules.for_output(spec.name, dtype)
        if spec.name not in expected or spec.name not in actual:
            missing = dst if spec.name not in actual else src
            drifts.append(missing_output(spec.name, tolerance, f"{missing} has no output for source output {spec.name!r}"))
            continue
        drifts.append(compare_output(spec.name, expected[spec.name], actual[spec.name], tolerance))
    return Comparison(kind, src, dst, device, tuple(drifts))


def _compare_all(subjects: Sequence[_Subject], devices: Sequence[str], outputs: Mapping[tuple[str, str], dict[str, np.ndarray]],
                 source: Signature, rules: ToleranceRules) -> tuple[list[Comparison], list[Comparison], list[Comparison]]:
    hops, cumulative, device_checks = [], [], []
    by_name = {s.name: s for s in subjects}
    for subject in subjects:
        for device in devices:
            mine = outputs.get((subject.name, device))
            if mine is None:
                continue
            if subject.parent is not None:
                parent = outputs.get((subject.parent, device))
                precision = "float16" if "float16" in (subject.precision, by_name[subject.parent].precision) else "float32"
                if parent is not None:
                    hops.append(_compare("hop", subject.parent, subject.name, device, parent, mine, source, rules, precision))
                origin = outputs.get((SOURCE, device))
                if origin is not None and subject.name != SOURCE:
                    cumulative.append(_compare("cumulative", SOURCE, subject.name, device, origin, mine, source, rules, subject.precision))
            if device != "cpu":
                cpu = outputs.get((subject.name, "cpu"))
                if cpu is not None:
                    device_checks.append(_compare("device", subject.name, subject.name, device, cpu, mine, source, rules, subject.precision))
    return hops, cumulative, device_checks


def find_output_dir(cwd: Path) -> Path:
    """The only ``bridge convert`` output directory in `cwd`, or an InputError listing the choices."""
    found = sorted(p for p in cwd.iterdir() if p.is_dir() and (p / "manifest.json").is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"{cwd}: no bridge output directory here (none holds a manifest.json); give DIR or MODEL --to FORMAT")
    raise InputError(f"{cwd}: several output directories ({', '.join(p.name for p in found)}); say which: bridge verify DIR")

