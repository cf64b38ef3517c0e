"""The source layer: what the user gave `convert`, identified, built if needed, and described.

One `SourceResolver` per `SourceKind`. `identify` picks the resolver that claims the model and
says what it can without running anything (the format, where the output goes by default);
`prepare` then builds the model when it is code (a factory runs in a child process, a live
object is saved in the caller's process), so that the framework of what was *built* decides the
route, and reads its signature. New kinds of source (Hugging Face directories, JAX functions)
are a resolver each, added to `DEFAULT_RESOLVERS`.
"""

from __future__ import annotations

import abc
import enum
import logging
import pkgutil
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import defaults, pt2, safety
from bridge.errors import InputError
from bridge.formats import Format, detect
from bridge.inputs import ExampleInputs
from bridge.isolation import run_isolated
from bridge.manifest import OpsetUpgrade, Pretrained, Source, sha256_of
from bridge.messages import HfExport, InspectRequest, MaterializeRequest, PretrainedRequest
from bridge.options import ConvertOptions
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry
from bridge.signature import Signature, TensorSpec

log = logging.getLogger(__name__)


class SourceKind(str, enum.Enum):
    """What kind of thing the user passed as the model."""

    MODEL_FILE = "model_file"
    """A file or directory in a format bridge reads directly: .onnx, SavedModel, .keras, .tflite."""
    EXPORTED_PROGRAM = "exported_program"
    """A PyTorch ExportedProgram ``.pt2``."""
    TORCHSCRIPT = "torchscript"
    """A PyTorch ``.pt``/``.pth``: a TorchScript archive, or a pickle loaded only with --trust-pickle."""
    FACTORY = "factory"
    """``package.module:factory``: Python code the user named, built in a child process."""
    LIVE_OBJECT = "live_object"
    """An nn.Module (a Transformers PreTrainedModel among them) or Keras model passed to the library."""
    PRETRAINED_DIR = "pretrained_dir"
    """A Hugging Face ``save_pretrained`` folder (config.json and weights), loaded offline in a child process."""


# A Python reference to a factory: ``package.module:callable``.
_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_reference(model: str) -> bool:
    """True when `model` reads as ``package.module:factory`` rather than a path."""
    return bool(_REFERENCE.match(model)) and not Path(model).exists()


def load_factory(reference: str) -> Any:
    """Import ``package.module:factory`` and call it. Only for references the user named."""
    try:
        factory = pkgutil.resolve_name(reference)
    except ImportError as exc:
        raise InputError(f"{reference}: cannot import {reference.partition(':')[0]} ({exc}); is it on PYTHONPATH?") from exc
    except (AttributeError, ValueError) as exc:
        raise InputError(f"{reference}: no such factory ({exc}); write it as package.module:function") from exc
    if not callable(factory):
        raise InputError(f"{reference}: names a {type(factory).__name__}, not a function that builds the model")
    return factory()


def factory_example_inputs(reference: str) -> ExampleInputs | None:
    """A factory may carry its inputs as ``factory.example_inputs = {name: (shape, dtype)}``."""
    example = getattr(pkgutil.resolve_name(reference), "example_inputs", None)
    if not example:
        return None
    return ExampleInputs(tuple(TensorSpec(n, tuple(s), d) for n, (s, d) in example.items()), origin=reference)


@dataclass(frozen=True)
class Identified:
    """A source recognised by its resolver, before anything was built or loaded."""

    kind: SourceKind
    format: Format | None
    """None until a factory has run: what it builds decides."""
    display: str
    """What the manifest records as the source's path: a path, a reference, ``<in-memory model>``."""
    default_out_dir: Path
    path: Path | None = None
    reference: str | None = None
    live: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Prepared:
    """A source ready for the first hop: a file, its format and signature, and its manifest record."""

    record: Source
    path: Path
    """The file the first hop reads (the user's file, or the one bridge saved a model into)."""
    specs: ExampleInputs | None

    @property
    def format(self) -> Format:
        return self.record.format

    @property
    def signature(self) -> Signature:
        return self.record.signature


@dataclass(frozen=True)
class SourceContext:
    """What resolvers need from the pipeline: options, inputs, where to save, and how to report."""

    options: ConvertOptions
    specs: ExampleInputs | None
    stage: Path
    runners: RunnerRegistry = DEFAULT_RUNNERS
    notify: Callable[..., None] = lambda kind, step, seconds=0.0, message="": None
    """``notify(kind, step, seconds, message)`` (a bridge.progress.Notifier), for progress displays and the log."""


class SourceResolver(abc.ABC):
    """Recognises one kind of source, builds it if it is code, and describes it."""

    kind: SourceKind
    description: str = ""
    """What the user passes, as ``bridge formats`` lists it."""
    requires: tuple[str, ...] = ()
    """Importable modules this kind needs beyond the format's runtime (found without importing them)."""
    extra: str = ""
    """The pip extra that installs them."""

    def missing(self) -> tuple[str, ...]:
        import importlib.util

        return tuple(m for m in self.requires if importlib.util.find_spec(m) is None)

    @abc.abstractmethod
    def claims(self, model: Any) -> bool:
        """Whether `model` is this resolver's kind (cheap: no framework, no code run)."""

    @abc.abstractmethod
    def identify(self, model: Any, options: ConvertOptions) -> Identified:
        """What can be said before building: the format (if known) and the default output directory."""

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        """Save the model to a file when it is code: (path, format, stored kind, note, example inputs used).

        A file source is already a file: it is returned as it is.
        """
        assert identified.path is not None and identified.format is not None
        return identified.path, identified.format, identified.format.value, None, context.specs

    def prepare(self, identified: Identified, context: SourceContext) -> Prepared:
        """Build (if needed) and describe the source."""
        path, fmt, kind, note, specs = self.build(identified, context)
        if identified.format is not None and fmt != identified.format:
            raise InputError(f"{identified.display}: --from {identified.format.value} but it builds a {fmt.value} model; drop --from")
        upgrade = None
        if fmt == Format.ONNX:
            path, upgrade = lift_old_opset(path, context)
        signature, described, companions = self.describe(path, fmt, kind, specs, context)
        # A JAX model built from code keeps what it was built from (jax_function, flax_nnx, flax_linen).
        kind = kind if fmt == Format.JAX and self.kind in (SourceKind.FACTORY, SourceKind.LIVE_OBJECT) else described
        if specs is not None:
            specs.check_against(signature, path)
        if not path.is_relative_to(context.stage):
            path = copy_into(path, companions, context.stage / "source")
        digest, size = sha256_of(path)
        materialized = path.relative_to(context.stage).as_posix()
        record = Source(
            path=identified.display, format=fmt, kind=kind, origin=self.kind.value, sha256=digest, bytes=size,
            inputs=signature.inputs, outputs=signature.outputs, materialized=materialized, notes=(note,) if note else (),
            sequence_length=example_length(signature, specs), upgrade=upgrade,
        )
        return Prepared(record, path, specs)

    def describe(self, path: Path, fmt: Format, kind: str, specs: ExampleInputs | None,
                 context: SourceContext) -> tuple[Signature, str, tuple[str, ...]]:
        """The signature of the saved model, read in a child process by its format's reference runtime.

        Also how it is stored, and the files beside it that it needs (ONNX external data). A ``.pt2``
        is read from its archive's JSON instead (milliseconds, no torch import).
        """
        if fmt == Format.TORCH and path.suffix.lower() == ".pt2":
            fast = pt2.read_signature(path)
            if fast is not None:
                return fast, "exported_program", ()
        response = run_isolated(
            InspectRequest(context.runners.primary(fmt), path, specs.specs if specs else None,
                           trust_pickle=context.options.trust_pickle, trust_code=context.options.trust_code),
            stage=f"load {fmt.value}", timeout=context.options.timeout, hide_gpu=True,
            log_to=context.stage / "logs" / "source-inspect.log",
        )
        return response.signature, response.kind, response.companions


class ModelFileResolver(SourceResolver):
    """.onnx, a SavedModel directory, .keras, .tflite: read as they are."""

    kind = SourceKind.MODEL_FILE
    description = "a model file or directory: .onnx, a SavedModel, .keras, .tflite"

    def claims(self, model: Any) -> bool:
        return isinstance(model, (str, Path)) and not (isinstance(model, str) and is_reference(model))

    def identify(self, model: Any, options: ConvertOptions) -> Identified:
        path = Path(model)
        fmt = options.from_format if options.from_format is not None and path.exists() else detect(path)
        if HfExport.of(options) is not None:
            raise InputError(f"{path}: --dynamic-seq and --kv-cache apply to Hugging Face Transformers models (a "
                             "save_pretrained folder, a PreTrainedModel); export this one with its own dynamic axes")
        if fmt == Format.TFJS:  # its weight files are checked before anything plans or runs (no framework needed)
            from bridge.runtimes.tfjs_runner import read_graph_model

            read_graph_model(path)
        name = path.name if path.is_dir() else path.stem
        resolved = path.resolve()
        return Identified(self.kind, fmt, str(resolved), resolved.parent / f"{name}.bridge", path=resolved)


class PretrainedResolver(SourceResolver):
    """A Hugging Face ``save_pretrained`` folder: its config is checked here, the model loaded offline in a child.

    Its config and weights are copied into ``DIR/source/pretrained/`` first: the program is exported from
    the copy, and verify rebuilds the Transformers model from it to run eagerly as the source.
    """

    kind = SourceKind.PRETRAINED_DIR
    description = ("a Hugging Face save_pretrained folder (config.json + model.safetensors or pytorch_model.bin), "
                   "loaded offline")
    requires = ("transformers", "safetensors", "torch")
    extra = "hf"
    COPY = "source/pretrained"

    def claims(self, model: Any) -> bool:
        from bridge.huggingface import is_pretrained_dir

        return isinstance(model, (str, Path)) and not (isinstance(model, str) and is_reference(model)) \
            and is_pretrained_dir(Path(model))

    def identify(self, model: Any, options: ConvertOptions) -> Identified:
        from bridge.huggingface import read_pretrained

        path = Path(model).resolve()
        read_pretrained(path, task=options.task, trust_code=options.trust_code)  # refused before any work
        missing = self.missing()
        if missing:
            from bridge.errors import MissingExtraError

            raise MissingExtraError(f"{path}: a Hugging Face folder needs {', '.join(missing)}: pip install 'bridge[hf]'")
        return Identified(self.kind, Format.TORCH, str(path), path.parent / f"{path.name}.bridge", path=path)

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        from bridge.huggingface import input_specs, read_pretrained

        assert identified.path is not None
        options = context.options
        pretrained = read_pretrained(identified.path, task=options.task, trust_code=options.trust_code)
        copy = context.stage / self.COPY
        copy.mkdir(parents=True, exist_ok=True)
        for name in pretrained.files:
            shutil.copyfile(identified.path / name, copy / name)
        specs = context.specs or ExampleInputs(
            input_specs(pretrained, seq_len=options.seq_len, image_size=options.image_size),
            origin=str(identified.path / "config.json"))
        context.notify("start", "materialize", 0.0)
        started = time.perf_counter()
        response = run_isolated(
            PretrainedRequest(copy, context.stage / "source", options.task, specs, options.dynamic_batch, options.trust_code,
                              shown=identified.path, hf=HfExport.of(options)),
            stage="load the Transformers model", timeout=options.timeout, hide_gpu=True,
            log_to=context.stage / "logs" / "source-materialize.log",
        )
        context.notify("done", "materialize", time.perf_counter() - started)
        return response.path, response.format, response.kind, response.note, response.example_inputs or specs

    def prepare(self, identified: Identified, context: SourceContext) -> Prepared:
        from dataclasses import replace

        from bridge.huggingface import read_pretrained

        prepared = super().prepare(identified, context)
        assert identified.path is not None
        pretrained = read_pretrained(identified.path, task=context.options.task, trust_code=context.options.trust_code)
        record = replace(prepared.record, pretrained=Pretrained(self.COPY, pretrained.architecture, context.options.task,
                                                                  context.options.kv_cache))
        return replace(prepared, record=record)


class ExportedProgramResolver(ModelFileResolver):
    """A ``.pt2``: its signature is read from the archive's JSON, with no torch import."""

    kind = SourceKind.EXPORTED_PROGRAM
    description = "a PyTorch ExportedProgram .pt2 (torch.export.save)"

    def claims(self, model: Any) -> bool:
        return super().claims(model) and Path(model).suffix.lower() == ".pt2"

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        path, fmt, _, note, specs = super().build(identified, context)
        return path, fmt, "exported_program", note, specs


class TorchScriptResolver(ModelFileResolver):
    """A ``.pt``/``.pth``: TorchScript (needs input shapes) or a pickle (refused unless --trust-pickle)."""

    kind = SourceKind.TORCHSCRIPT
    description = "a TorchScript .pt/.pth (with --input-shape); a pickle only with --trust-pickle"

    def claims(self, model: Any) -> bool:
        return super().claims(model) and Path(model).suffix.lower() in (".pt", ".pth")

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        path, fmt, _, note, specs = super().build(identified, context)
        if path.exists() and safety.is_torchscript_archive(path) and specs is None:
            # (A pickled .pt goes on to the loader, which refuses it unless --trust-pickle, and then asks.)
            raise InputError(
                f"{path}: TorchScript and pickled modules do not store input shapes; "
                "give --input-shape NAME:1,3,224,224 (repeatable) or --example-inputs FILE.npz"
            )
        return path, fmt, "torchscript", note, specs


class FactoryResolver(SourceResolver):
    """``package.module:factory``: called in a child process; what it returns decides the format."""

    kind = SourceKind.FACTORY
    description = ("package.module:factory, Python code you name, built in a child process (a PyTorch, Transformers, "
                   "Keras or JAX/Flax model; JAX needs bridge[jax])")

    def claims(self, model: Any) -> bool:
        return isinstance(model, str) and is_reference(model)

    def identify(self, model: Any, options: ConvertOptions) -> Identified:
        factory = str(model).rsplit(":", 1)[1]
        return Identified(self.kind, options.from_format, str(model), Path.cwd() / f"{factory}.bridge", reference=str(model))

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        assert identified.reference is not None
        context.notify("start", "materialize", 0.0)
        started = time.perf_counter()
        response = run_isolated(
            MaterializeRequest(identified.reference, context.stage / "source", context.specs, context.options.dynamic_batch,
                               hf=HfExport.of(context.options),
                               torchscript=context.options.torch_exporter == "torchscript", import_paths=(Path.cwd(),)),
            stage="materialize", timeout=context.options.timeout, hide_gpu=True,
            log_to=context.stage / "logs" / "source-materialize.log",
        )
        context.notify("done", "materialize", time.perf_counter() - started)
        # A JAX model's inputs come back in the order its artifact takes them (by name).
        specs = response.example_inputs if response.format == Format.JAX else context.specs or response.example_inputs
        return response.path, response.format, response.kind, response.note, specs


class LiveObjectResolver(SourceResolver):
    """An nn.Module or Keras model handed to the library: saved in this process (it is already in memory)."""

    kind = SourceKind.LIVE_OBJECT
    description = ("an nn.Module, a Transformers PreTrainedModel, a Keras model or a JAX model ((function, inputs), "
                   "a Flax module) passed to bridge.convert")

    def claims(self, model: Any) -> bool:
        return live_format(model) is not None

    def identify(self, model: Any, options: ConvertOptions) -> Identified:
        return Identified(self.kind, live_format(model), "<in-memory model>", Path.cwd() / "model.bridge", live=model)

    def build(self, identified: Identified, context: SourceContext) -> tuple[Path, Format, str, str | None, ExampleInputs | None]:
        from bridge.hops.materialize import materialize

        context.notify("start", "materialize", 0.0)
        started = time.perf_counter()
        saved = materialize(identified.live, context.stage / "source", context.specs, context.options.dynamic_batch,
                            torchscript=context.options.torch_exporter == "torchscript", origin="the model passed to bridge.convert",
                            hf=HfExport.of(context.options))
        context.notify("done", "materialize", time.perf_counter() - started)
        return saved.path, saved.format, saved.kind, saved.note, saved.example_inputs if saved.format == Format.JAX else context.specs


def lift_old_opset(path: Path, context: SourceContext) -> tuple[Path, OpsetUpgrade | None]:
    """An ONNX file outside the opsets the hops read, lifted or lowered and checked in a child (bridge.onnx_opset).

    Also where an ONNX source with custom-domain ops is refused. Else the file as it is.
    """
    from bridge.messages import OpsetUpgradeRequest

    lifted = context.stage / "source" / f"{path.stem}.opset{defaults.ONNX_OPSET}.onnx"
    lifted.parent.mkdir(parents=True, exist_ok=True)
    response = run_isolated(OpsetUpgradeRequest(path, lifted, defaults.ONNX_OPSET), stage="upgrade opset",
                            timeout=context.options.timeout, hide_gpu=True,
                            log_to=context.stage / "logs" / "source-upgrade.log")
    if response.kept:
        log.warning("%s: %s; onnx2tf reads it, onnx2torch may not", path, response.kept)
    if response.upgrade is None:
        return path, None
    from dataclasses import replace

    up = replace(response.upgrade, original_sha256=sha256_of(path)[0])
    direction = "lowered" if up.from_opset > up.to_opset else "lifted"
    context.notify("done", f"{'lower' if direction == 'lowered' else 'upgrade'} opset {up.from_opset} -> {up.to_opset}", 0.0,
                   f"checked with {up.checked_with}, max abs {up.max_abs:.2g}")
    why = "newer than onnx2torch reads" if direction == "lowered" else "older than onnxruntime runs"
    log.warning("%s: opset %d is %s; %s to opset %d with %s (max abs %.2g against the original, %s)", path,
                up.from_opset, why, direction, up.to_opset, up.tool, up.max_abs, up.checked_with)
    return lifted, up


def example_length(signature: Signature, specs: ExampleInputs | None) -> int | None:
    """The example's size at the first symbolic dimension after the batch (a dynamic sequence axis), or None."""
    if specs is None:
        return None
    given = {s.name: s.shape for s in specs.specs}
    for spec in signature.inputs:
        for axis, dim in enumerate(spec.shape[1:], start=1):
            example = given.get(spec.name, ())
            size = example[axis] if axis < len(example) else None
            if not isinstance(dim, int) and isinstance(size, int):
                return size
    return None


def copy_into(path: Path, companions: tuple[str, ...], directory: Path) -> Path:
    """Copy the source (and the files beside it that it needs) into the output folder.

    The folder then holds everything verify runs: it reads nothing outside the folder it is given
    (docs/safety.md), and a folder made on one machine verifies on another.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / path.name
    if path.is_dir():
        shutil.copytree(path, target, symlinks=False)
        return target
    shutil.copyfile(path, target)
    for name in companions:
        (target.parent / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path.parent / name, target.parent / name)
    return target


def live_format(model: Any) -> Format | None:
    """The format of a live model object: torch for an nn.Module, keras for a Keras model, jax for a JAX
    function with its inputs or a Flax module (bridge.hops.jax_model), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return Format.TORCH
    if type(model).__module__.startswith(("keras", "tf_keras", "tensorflow")):
        return Format.KERAS
    from bridge.hops.jax_model import is_jax_model

    if is_jax_model(model):
        return Format.JAX
    return None


DEFAULT_RESOLVERS: tuple[SourceResolver, ...] = (
    FactoryResolver(),
    LiveObjectResolver(),
    PretrainedResolver(),
    ExportedProgramResolver(),
    TorchScriptResolver(),
    ModelFileResolver(),
)
"""Asked in order; the first that claims the model resolves it."""


def resolver_for(model: Any, resolvers: Sequence[SourceResolver] = DEFAULT_RESOLVERS) -> SourceResolver:
    """The resolver that claims `model`, or an InputError saying what bridge accepts."""
    for resolver in resolvers:
        if resolver.claims(model):
            return resolver
    raise InputError(
        f"cannot convert a {type(model).__name__}: pass a path, a package.module:factory reference, "
        "an nn.Module, a Keras model or a JAX model"
    )
