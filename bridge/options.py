"""The library's arguments as records: `ConvertOptions` and `VerifyOptions`.

The CLI builds these from its flags; `bridge.convert` and `bridge.verify` take them (or the same
names as keywords). Each checks its own values when built, so a bad option is one InputError
before any work starts. Defaults come from bridge.defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from bridge import defaults
from bridge.errors import InputError
from bridge.formats import Format

if TYPE_CHECKING:
    from bridge.verification.compare import ToleranceRules

TORCH_EXPORTERS = ("dynamo", "torchscript")
DEVICES = ("cpu", "cuda")


def parse_formats(value: str | Format | Sequence[str | Format]) -> tuple[Format, ...]:
    """``"onnx,tf"``, ``Format.ONNX`` or a list of either, as formats (``all`` is kept for the caller)."""
    items: list[str | Format] = [value] if isinstance(value, (str, Format)) else list(value)
    names: list[str | Format] = []
    for item in items:
        names.extend(p for p in item.split(",") if p.strip()) if isinstance(item, str) else names.append(item)
    return tuple(Format.parse(n) for n in names)


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert. Every hop receives these and picks the ones it uses."""

    from_format: Format | None = None
    """The source's format when its name does not tell (``--from``); for a factory, checked against what it builds."""
    via: tuple[Format, ...] = ()
    """Force the route through these formats (``--via onnx,tf``)."""
    opset: int | None = None
    dynamic_batch: bool = False
    fp16: bool = False
    timeout: float | None = None
    """Seconds each isolated step may take."""
    max_memory: int | None = None
    """Bytes the largest hop may use (``--max-memory 8GB``): a route expected to need more is refused before it starts,
    and a hop that goes over is stopped (bridge.memory). None: plan against the memory available."""
    trust_pickle: bool = False
    trust_code: bool = False
    torch_exporter: str = "dynamo"
    """``torchscript`` pins the torch -> onnx hop to its TorchScript candidate (and saves a factory's module as TorchScript)."""
    check: bool = True
    """Run every artifact in its runtime as it is made and compare it with its parent (``--no-check`` turns it off)."""
    prefer: tuple[str, ...] = ()
    """Candidate names to try first, in the hops that have them (``--prefer``)."""
    only: tuple[str, ...] = ()
    """Candidate names to use alone, in the hops that have them (``--only``)."""
    atol: float | None = None
    rtol: float | None = None
    tol: Mapping[str, float] = field(default_factory=dict)
    min_sqnr: float | None = None
    """Quantized artifacts: the least SQNR in dB against the float parent (default per scheme, docs/quantization.md)."""
    min_top1: float | None = None
    """Quantized artifacts: the least top-1 agreement with the float parent, where outputs are class scores."""
    """Tolerances of the checks, as verify takes them; None means the defaults for each output's dtype."""
    task: str | None = None
    """For a Hugging Face folder: the task whose Auto class loads it (``--task``), instead of the config's architectures."""
    seq_len: int | None = None
    """For a Hugging Face text model: the sequence length of its inputs (default: the config's, at most 128)."""
    image_size: int | None = None
    """For a Hugging Face vision model: the image size of its inputs (default: the config's)."""
    dynamic_seq: bool = False
    """For a Hugging Face text model: the sequence axis (dim 1 of its inputs) symbolic where the hops allow it."""
    kv_cache: bool = False
    """For a Hugging Face causal LM: its key/value cache as outputs too (``present.N.key``, ``present.N.value``)."""
    quantize: tuple[str, ...] = ()
    """Quantized artifacts to make beside the float ones, for the tflite and onnx targets (``--quantize int8,dynamic``)."""
    calibration: Path | None = None
    """The ``.npz`` of representative inputs static int8 quantization calibrates on (``--calibration``); else generated."""
    calibration_data: Path | None = None
    """Set by convert: the calibration samples checked and saved in the source's layout, which the hops read."""
    quantize_formats: tuple[Format, ...] = ()
    """Set by convert: the targets the schemes apply to (tflite and onnx among those asked for)."""

    def __post_init__(self) -> None:
        _check_tolerances(self.atol, self.rtol, self.tol)
        for scheme in self.quantize:
            if scheme not in defaults.QUANTIZE_SCHEMES:
                raise InputError(f"--quantize {scheme}: use one of {', '.join(defaults.QUANTIZE_SCHEMES)}")
        if self.calibration is not None and not self.quantize:
            raise InputError(f"--calibration {self.calibration}: it calibrates a quantization; add --quantize int8")
        for name, value in (("--seq-len", self.seq_len), ("--image-size", self.image_size)):
            if value is not None and value < 1:
                raise InputError(f"{name} {value}: give a positive size")
        if self.torch_exporter not in TORCH_EXPORTERS:
            raise InputError(f"torch_exporter {self.torch_exporter!r}: use one of {', '.join(TORCH_EXPORTERS)}")
        if self.opset is not None and not 7 <= self.opset <= 30:
            raise InputError(f"opset {self.opset}: give an ONNX opset between 7 and 30")
        if self.timeout is not None and self.timeout <= 0:
            raise InputError(f"timeout {self.timeout:g}: give a positive number of seconds")

    @classmethod
    def build(cls, base: ConvertOptions | None = None, **changes: Any) -> Self:
        """`base` (or the defaults) with `changes` applied; None values leave a field as it is."""
        built: Self = _build(cls, base, changes)
        return built


@dataclass(frozen=True)
class LocalizeOptions:
    """How to localise a hop's drift (``bridge explain``, ``verify --localize``)."""

    hop: str | None = None
    """``PARENT->CHILD`` (or ``PARENT:CHILD``) by the folder's keys (``source->onnx``) or formats (``torch->onnx``);
    None: every failing hop."""
    output: str | None = None
    """The one source output to follow; None: all."""
    sample: int | None = None
    """The sample to localise on; None: each hop's worst."""
    top: int = defaults.LOCALIZE_TOP
    max_steps: int = defaults.BISECT_MAX_STEPS
    bisect: bool = False
    """Bisect even where the tensors can be joined."""

    def __post_init__(self) -> None:
        if self.top < 1:
            raise InputError(f"--top {self.top}: show at least one operation")
        if self.max_steps < 1:
            raise InputError(f"--max-steps {self.max_steps}: allow at least one bisection step")
        if self.sample is not None and self.sample < 0:
            raise InputError(f"--sample {self.sample}: samples are numbered from 0")

    def hop_pair(self) -> tuple[str, str] | None:
        if self.hop is None:
            return None
        text = self.hop.replace(" ", "")
        parts = text.split("->") if "->" in text else text.split(":")
        if len(parts) != 2 or not all(parts):
            raise InputError(f"--hop {self.hop!r}: write it as 'PARENT->CHILD' (quoted for the shell) or PARENT:CHILD, "
                             "as in source->onnx or onnx:tflite")
        return parts[0], parts[1]


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify: inputs, devices, tolerances, latency runs."""

    inputs: Path | None = None
    """An ``.npz`` of inputs keyed by source input name (``[samples, *shape]`` or one sample); else generated."""
    seed: int = defaults.SEED
    samples: int = defaults.SAMPLES
    int_high: int | None = None
    """Exclusive upper bound of generated integer inputs; None reads the embedding size from the model."""
    devices: tuple[str, ...] = DEVICES
    atol: float | None = None
    rtol: float | None = None
    tol: Mapping[str, float] = field(default_factory=dict)
    """Per-output absolute tolerance: ``{output_name: atol}``."""
    min_sqnr: float | None = None
    """Quantized artifacts: the least SQNR in dB against the float parent (default per scheme, docs/quantization.md)."""
    min_top1: float | None = None
    """Quantized artifacts: the least top-1 agreement with the float parent, where outputs are class scores."""
    quantized_layers: int = defaults.QUANTIZED_LAYERS
    """Quantized artifacts: how many of the operations that lose the most to name (the report's
    ``quantization_layers``); 0 measures none."""
    latency_runs: int = defaults.LATENCY_RUNS
    warmup: int = defaults.WARMUP_RUNS
    timeout: float | None = None
    save_inputs: Path | None = None
    """Where the inputs used are saved with their sha256 (default ``DIR/verify/inputs.npz``)."""
    trust_pickle: bool = False
    trust_code: bool = False
    allow_unavailable: bool = False
    """Pass even when an artifact ran on none of the devices asked for (otherwise exit 2)."""
    allow_changed: bool = False
    """Verify artifacts whose bytes differ from the manifest's sha256 (otherwise exit 2 before anything runs)."""
    factory: str | None = None
    """The ``package.module:factory`` the user names: only then is a factory source rebuilt and run eagerly."""
    localize: LocalizeOptions | None = None
    """Localise each failing hop (or the one named) on the CPU: the report's ``localization`` section."""

    def __post_init__(self) -> None:
        if self.localize is not None and self.localize.sample is not None and self.localize.sample >= self.samples \
                and self.inputs is None:
            raise InputError(f"--sample {self.localize.sample}: there are {self.samples} samples (--samples)")
        if self.samples < 1:
            raise InputError(f"--samples {self.samples}: need at least one sample")
        if self.latency_runs < 1 or self.warmup < 0:
            raise InputError("--latency-runs needs at least one run, and warm-up runs cannot be negative")
        unknown = [d for d in self.devices if d not in DEVICES]
        if unknown or not self.devices:
            raise InputError(f"device {unknown[0] if unknown else '(none)'!r}: use {' or '.join(DEVICES)}")
        _check_tolerances(self.atol, self.rtol, self.tol)
        if self.int_high is not None and self.int_high < 1:
            raise InputError(f"--int-high {self.int_high}: give a bound of at least 1")
        if self.quantized_layers < 0:
            raise InputError(f"--quantized-layers {self.quantized_layers}: give 0 (none) or more")

    @classmethod
    def build(cls, base: VerifyOptions | None = None, **changes: Any) -> Self:
        """`base` (or the defaults) with `changes` applied; None values leave a field as it is."""
        built: Self = _build(cls, base, changes)
        return built


def tolerance_rules_of(options: ConvertOptions | VerifyOptions) -> ToleranceRules:
    """The `ToleranceRules` a ConvertOptions or VerifyOptions asks for."""
    from bridge.verification.compare import ToleranceRules

    return ToleranceRules(options.atol, options.rtol, dict(options.tol) if options.tol else None,
                          options.min_sqnr, options.min_top1)


def _check_tolerances(atol: float | None, rtol: float | None, tol: Mapping[str, float]) -> None:
    for name, value in (("--atol", atol), ("--rtol", rtol), *((f"--tol {k}", v) for k, v in tol.items())):
        if value is not None and not value >= 0:
            raise InputError(f"{name} {value}: a tolerance must be a number >= 0")


def _build(cls: type[Any], base: Any, changes: Mapping[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no option {unknown[0]!r}")
    given = {k: v for k, v in changes.items() if v is not None}
    for key in ("via",):
        if key in given:
            given[key] = parse_formats(given[key])
    if "from_format" in given:
        given["from_format"] = Format.parse(given["from_format"])
    for key in ("prefer", "only", "quantize"):
        if key in given:
            items = given[key].split(",") if key == "quantize" and isinstance(given[key], str) else \
                [given[key]] if isinstance(given[key], str) else given[key]
            given[key] = tuple(n.strip() for n in items if n.strip())
    if "devices" in given:
        given["devices"] = tuple(given["devices"]) if not isinstance(given["devices"], str) else (given["devices"],)
    for key in ("inputs", "save_inputs", "calibration"):
        if key in given:
            given[key] = Path(given[key])
    return dataclasses.replace(base, **given) if base is not None else cls(**given)
