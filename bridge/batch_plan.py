"""What `bridge batch` runs: a plan file, a directory of models, or the zoo, read into `Job`s.

A plan file is YAML or JSON, read as untrusted input: known keys only, each value checked, every
path relative to the plan's folder and inside it, no code. ::

    targets: [onnx, tflite]            # for every model that does not say
    options: {opset: 17}               # convert options, as the flags name them (dynamic_batch, via, ...)
    verify: {samples: 4, devices: [cpu], atol: 1.0e-4}
    timeout: 1800                      # seconds one job may take
    models:
      - model: cnn.pt2                 # a path inside the plan's folder
        targets: [tflite]
        inputs: cnn.inputs.npz         # verify's --inputs
      - model: encoder.onnx
        name: encoder-opset17
        options: {opset: 17}
      - model: mypkg.models:build      # a factory: only with --trust-factory mypkg.models:build

A directory runs every model in it (files and SavedModel/Hugging Face folders that bridge
recognises), with ``NAME.inputs.npz`` beside a model as its inputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.batch import Job
from bridge.errors import InputError
from bridge.formats import detect
from bridge.options import parse_formats

MAX_PLAN_BYTES = 4 << 20
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Plan key -> (flag, kind). Kinds: int, float, bool (a flag, or its negation for "check"), str, list (comma-joined),
# mapping (NAME=VALUE, repeated), path (a file inside the plan's folder).
CONVERT_KEYS: dict[str, tuple[str, str]] = {
    "from": ("--from", "str"), "via": ("--via", "list"), "opset": ("--opset", "int"),
    "dynamic_batch": ("--dynamic-batch", "bool"), "fp16": ("--fp16", "bool"), "quantize": ("--quantize", "list"),
    "calibration": ("--calibration", "path"), "example_inputs": ("--example-inputs", "path"),
    "input_shape": ("--input-shape", "shapes"), "torch_exporter": ("--torch-exporter", "str"),
    "check": ("--no-check", "negated"), "prefer": ("--prefer", "repeat"), "only": ("--only", "repeat"),
    "task": ("--task", "str"), "seq_len": ("--seq-len", "int"), "image_size": ("--image-size", "int"),
    "dynamic_seq": ("--dynamic-seq", "bool"), "kv_cache": ("--kv-cache", "bool"), "timeout": ("--timeout", "float"),
    "max_memory": ("--max-memory", "str"), "min_sqnr": ("--min-sqnr", "float"), "min_top1": ("--min-top1", "float"),
}
VERIFY_KEYS: dict[str, tuple[str, str]] = {
    "samples": ("--samples", "int"), "seed": ("--seed", "int"), "int_high": ("--int-high", "int"),
    "devices": ("--device", "repeat"), "atol": ("--atol", "float"), "rtol": ("--rtol", "float"),
    "tol": ("--tol", "mapping"), "latency_runs": ("--latency-runs", "int"), "allow_unavailable": ("--allow-unavailable", "bool"),
    "quantized_layers": ("--quantized-layers", "int"),
}
TOP_KEYS = {"targets", "options", "verify", "timeout", "models"}
MODEL_KEYS = {"model", "name", "targets", "options", "verify", "timeout", "inputs"}


def read_plan(path: Path, *, to: str | None = None, trusted: Sequence[str] = (), timeout: float | None = None) -> list[Job]:
    """The jobs of a plan file or a directory of models; `to` overrides every model's targets."""
    if path.is_dir():
        return _directory_jobs(path, to, timeout)
    if not path.is_file():
        raise InputError(f"{path}: no such plan; give a YAML or JSON plan file, a directory of models, or --zoo")
    if path.stat().st_size > MAX_PLAN_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is larger than a plan; give a YAML or JSON plan file")
    data = _load(path)
    where = str(path)
    if not isinstance(data, Mapping):
        raise InputError(f"{where}: a plan is a mapping with a 'models' list; see docs/batch.md")
    _known(data, TOP_KEYS, where)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise InputError(f"{where}: 'models' must be a non-empty list of models; see docs/batch.md")
    base = path.parent.resolve()
    default_targets = data.get("targets")
    default_flags = _flags(data.get("options"), CONVERT_KEYS, base, f"{where}: options") + \
        _flags(data.get("verify"), VERIFY_KEYS, base, f"{where}: verify")
    default_timeout = _seconds(data.get("timeout"), f"{where}: timeout")
    jobs: list[Job] = []
    for i, entry in enumerate(models):
        here = f"{where}: models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping):
            raise InputError(f"{here}: give a model path or a mapping with 'model'")
        _known(entry, MODEL_KEYS, here)
        flags = default_flags + _flags(entry.get("options"), CONVERT_KEYS, base, f"{here}: options") + \
            _flags(entry.get("verify"), VERIFY_KEYS, base, f"{here}: verify")
        model = entry.get("model")
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"{here}: 'model' must be a path (or a package.module:factory named with --trust-factory)")
        if REFERENCE.match(model) and not Path(base, model).exists():
            if model not in trusted:
                raise InputError(f"{here}: {model} is code; bridge runs it only when you name it: "
                                 f"add --trust-factory {model} to the command line")
            resolved, stem = model, model.rsplit(":", 1)[1]
        else:
            file = _inside(base, model, f"{here}: model")
            given = {**(data.get("options") or {}), **(entry.get("options") or {})}
            if "from" not in given:  # a clear error now for a file bridge does not read, not a job error later
                try:
                    detect(file)
                except InputError as exc:
                    raise InputError(f"{here}: {str(exc).replace('pass --from', 'give options: {from: FORMAT}')}") from exc
            resolved, stem = str(file), file.name if file.is_dir() else file.stem
        name = entry.get("name", stem)
        if not isinstance(name, str) or not NAME.match(name):
            raise InputError(f"{here}: name {str(name)[:60]!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
        targets = to or entry.get("targets", default_targets)
        inputs = entry.get("inputs")
        job_timeout = _seconds(entry.get("timeout"), f"{here}: timeout")
        jobs.append(Job(name, resolved, _targets(targets, here), tuple(flags),
                        str(_inside(base, inputs, f"{here}: inputs")) if inputs is not None else None,
                        timeout if timeout is not None else job_timeout if job_timeout is not None else default_timeout))
    _unique(jobs, where)
    return jobs


def zoo_jobs(*, slow: bool = False, timeout: float | None = None) -> list[Job]:
    """Every zoo model (the slow ones with `slow`) to every target ``all`` reaches, less its known failures."""
    from bridge.formats import Format
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.route import parse_targets
    from bridge.zoo.registry import get, names

    jobs = []
    for name in names():
        model = get(name)
        if model.slow and not slow:
            continue
        source = {"torch": Format.TORCH, "keras": Format.KERAS, "jax": Format.JAX}[model.source]
        targets = [t.value for t in parse_targets("all", source, DEFAULT_REGISTRY) if model.known_failure(t.value) is None]
        flags = [*(["--atol", repr(model.atol)] if model.atol is not None else []),
                 *(["--rtol", repr(model.rtol)] if model.rtol is not None else [])]
        jobs.append(Job(name, name, tuple(targets), tuple(flags), None, timeout, zoo=True))
    return jobs


def select(jobs: list[Job], names: str | None) -> list[Job]:
    """The jobs named in `names` (comma-separated), in plan order; every name must be a job."""
    if not names:
        return jobs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {j.name for j in jobs}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise InputError(f"--select {unknown[0]}: no such job; the jobs are {', '.join(sorted(known))}")
    return [j for j in jobs if j.name in wanted]


def _directory_jobs(directory: Path, to: str | None, timeout: float | None) -> list[Job]:
    if not to:
        raise InputError(f"{directory}: a directory of models needs --to FORMATS (a plan file may name them instead)")
    jobs = []
    for item in sorted(directory.iterdir()):
        if item.name.startswith(".") or item.name.endswith((".bridge", ".batch")) or item.is_symlink():
            continue
        try:
            detect(item)
        except InputError:
            continue  # not a model: an inputs file, a README
        stem = item.name if item.is_dir() else item.stem
        inputs = directory / f"{stem}.inputs.npz"
        jobs.append(Job(re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100] or "model", str(item.resolve()),
                        _targets(to, str(item)), (), str(inputs.resolve()) if inputs.is_file() else None, timeout))
    if not jobs:
        raise InputError(f"{directory}: no model bridge recognises in it (.pt2, .onnx, .keras, .tflite, SavedModel, ...)")
    _unique(jobs, str(directory))
    return jobs


def _load(path: Path) -> Any:
    import yaml  # type: ignore[import-untyped]

    try:
        text = path.read_text(encoding="utf-8", errors="strict")
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)  # plain data only: no tags that build objects
    except (ValueError, RecursionError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a valid plan ({reason}); see docs/batch.md") from exc


def _known(mapping: Mapping[Any, Any], keys: set[str], where: str) -> None:
    unknown = sorted(str(k)[:40] for k in mapping if k not in keys)
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(keys))}")


def _inside(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise InputError(f"{where}: give a path relative to the plan's folder")
    path = (base / value).resolve()
    if not path.is_relative_to(base):
        raise InputError(f"{where}: {value[:120]} leaves the plan's folder {base}; keep models and inputs inside it")
    if not path.exists():
        raise InputError(f"{where}: {value[:120]} does not exist in {base}")
    return path


def _targets(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        raise InputError(f"{where}: no targets; give 'targets' (for the model or the whole plan) or --to")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items) or not items:
        raise InputError(f"{where}: targets must be a format or a list of formats")
    names = [p.strip().lower() for v in items for p in v.split(",") if p.strip()]
    try:
        parse_formats([n for n in names if n != "all"])
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    return tuple(dict.fromkeys(names))


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{where}: give a positive number of seconds")
    return float(value)


def _flags(options: Any, keys: Mapping[str, tuple[str, str]], base: Path, where: str) -> list[str]:
    """`options` as command-line flags, each value checked against its kind."""
    if options is None:
        return []
    if not isinstance(options, Mapping):
        raise InputError(f"{where}: give a mapping of option names to values")
    if "trust_pickle" in options or "trust_code" in options:
        raise InputError(f"{where}: a plan cannot trust code; give --trust-pickle or --trust-code on the command line")
    _known(options, set(keys), where)
    flags: list[str] = []
    for key, value in options.items():
        flag, kind = keys[key]
        bad = InputError(f"{where}: {key}: {str(value)[:60]!r} is not a valid {kind}")
        if kind in ("bool", "negated"):
            if not isinstance(value, bool):
                raise bad
            if value == (kind == "bool"):
                flags.append(flag)
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad
            flags += [flag, str(value)]
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            flags += [flag, repr(float(value))]
        elif kind == "str":
            if not isinstance(value, str) or not value or value.startswith("-") or len(value) > 200:
                raise bad
            flags += [flag, value]
        elif kind in ("list", "repeat"):
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(v, str) and v and not v.startswith("-") for v in items):
                raise bad
            flags += [flag, ",".join(items)] if kind == "list" else [x for v in items for x in (flag, v)]
        elif kind == "mapping":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                         and not isinstance(v, bool) for k, v in value.items()):
                raise bad
            flags += [x for k, v in value.items() for x in (flag, f"{k}={float(v)!r}")]
        elif kind == "shapes":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, list) and all(
                    isinstance(d, int) and not isinstance(d, bool) for d in v) for k, v in value.items()):
                raise bad
            flags += [x for k, v in value.items() for x in (flag, f"{k}:{','.join(map(str, v))}")]
        elif kind == "path":
            flags += [flag, str(_inside(base, value, f"{where}: {key}"))]
    return flags


def _unique(jobs: list[Job], where: str) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise InputError(f"{where}: two models are named {job.name!r}; give one of them a 'name'")
        seen.add(job.name)
