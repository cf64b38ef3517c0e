"""The ``bridge`` command: a thin layer over bridge.convert and bridge.verify.

Each command builds the library's option records from its flags, calls the library, and prints
what it returns (bridge.cli_output). Exit codes (docs/tolerances.md): 0 done / verified; 1 drift
over tolerance; 2 bad input or usage (one line on stderr; the traceback with --debug); 3 an
internal error (the traceback in a file); 130 Ctrl-C; 143 SIGTERM. Every option can also come
from the environment as ``BRIDGE_<COMMAND>_<OPTION>`` (``BRIDGE_VERIFY_SAMPLES=16``). Nothing
here imports a framework: the library modules are imported inside the commands.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bridge import __version__, defaults
from bridge.cli_output import (
    Progress,
    explain_exit_code,
    print_conversion,
    print_localization,
    print_report,
    setup_logging,
)
from bridge.cli_params import FormatList, InputShape, OutputTolerance, ReportTarget
from bridge.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, BridgeError, HopError, InputError, MissingExtraError
from bridge.formats import TFJS_INSTALL
from bridge.huggingface import TASKS

if TYPE_CHECKING:
    from bridge.conversion import Conversion
    from bridge.options import ConvertOptions

SUB_CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
CONTEXT: dict[str, Any] = {**SUB_CONTEXT, "auto_envvar_prefix": "BRIDGE"}
"""The group's settings: options of every command come from BRIDGE_<COMMAND>_<OPTION> too."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT), raised in the main thread in place of KeyboardInterrupt.

    CPython ends a ``python -m`` process by SIGINT, whatever it then exits with, once a
    KeyboardInterrupt has left code run by exec() on a string: it takes it for one nobody caught
    (bpo-1054041's flag, set by run_eval_code_obj). dataclasses build their methods that way while
    bridge's modules import, so a Ctrl-C in the first second of ``python -m bridge convert`` ended
    it with -2 instead of 130 (3 runs in 10 here; once in CI). Bridge's own exception leaves that
    flag alone.
    """


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the same cleanup runs as for Ctrl-C."""


def _on_sigint(signum: int, frame: object) -> None:
    raise Interrupted()


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


class BridgeGroup(click.Group):
    """click's group, with every way out given its one exit code (docs/tolerances.md).

    Usage errors are one line and exit 2, like every user error; Ctrl-C exits 130 and SIGTERM 143,
    after the running child steps are ended and the partial output removed; anything unexpected is
    a bug in bridge: one line, the traceback in a file whose path is printed, exit 3.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        if before[0] is signal.default_int_handler:  # an ignored SIGINT (a background job) stays ignored
            signal.signal(signal.SIGINT, _on_sigint)
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return self._main(*args, **kwargs)
        finally:  # a caller that runs the command in its own process (a test, a script) gets its handlers back
            for sig, handler in zip((signal.SIGINT, signal.SIGTERM), before, strict=True):
                if handler is not None:  # None: set outside Python, which cannot be put back
                    signal.signal(sig, handler)

    def _main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            hint = f"Try '{exc.ctx.command_path} -h' for help." if exc.ctx is not None else ""
            click.echo(f"bridge: error: {exc.format_message()}" + (f"\n{hint}" if hint else ""), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"bridge: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt, Interrupted):
            _interrupted("interrupted", EXIT_INTERRUPTED)
        except Terminated:
            _interrupted("terminated", EXIT_TERMINATED)
        except Exception as exc:  # noqa: BLE001 - a bug: reported in one line, the traceback kept in a file
            _internal_error(exc)


def _interrupted(what: str, code: int) -> None:
    from bridge.isolation import end_all

    end_all()
    click.echo(f"bridge: {what}; no partial output was kept", err=True)
    sys.exit(code)


def _internal_error(exc: BaseException) -> None:
    from bridge.isolation import end_all

    end_all()
    report = Path(tempfile.gettempdir()) / f"bridge-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    text = f"bridge {__version__}, Python {sys.version.split()[0]}, argv {sys.argv}\n\n{traceback.format_exc()}"
    try:
        report.write_text(text, encoding="utf-8")
        where = f"the traceback is in {report}"
    except OSError:
        where = "the traceback could not be saved"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    click.echo(f"bridge: internal error (a bug in bridge, not in your model): {type(exc).__name__}: {first}", err=True)
    click.echo(f"bridge: {where}; please report it to bridge's maintainers with that file and `bridge env`", err=True)
    sys.exit(EXIT_INTERNAL)


@contextmanager
def _user_errors(debug: bool) -> Iterator[None]:
    """Turn a BridgeError into one line on stderr (naming the step's log when there is one) and its exit code."""
    try:
        yield
    except BridgeError as exc:
        log = getattr(exc, "log", None)
        click.echo(f"bridge: error: {exc}" + (f" (log: {log})" if log and str(log) not in str(exc) else ""), err=True)
        if debug:
            if getattr(exc, "detail", ""):
                click.echo(exc.detail, err=True)  # type: ignore[attr-defined]
            traceback.print_exc()
        sys.exit(exc.exit_code)


def _common[F: Callable[..., Any]](func: F) -> F:
    """-v/-q and --debug, on every command."""
    for option in reversed([
        click.option("-v", "--verbose", count=True, help="Log each step (-v) and its detail (-vv) on stderr."),
        click.option("-q", "--quiet", is_flag=True, help="No progress output; errors only."),
        click.option("--debug", is_flag=True, help="Show tracebacks and converter output on errors."),
    ]):
        func = option(func)
    return func


def _reports[F: Callable[..., Any]](what: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        for option in reversed([
            click.option("--json", "json", type=ReportTarget(), help=f"Write the {what} as JSON to PATH, or - for stdout."),
            click.option("--junit", "junit", type=ReportTarget(), help=f"Write the {what} as JUnit XML to PATH, or -."),
            click.option("--markdown", "markdown", type=ReportTarget(), help=f"Write the {what} as Markdown to PATH, or -."),
        ]):
            func = option(func)
        return func
    return decorate


def _one_stdout(*paths: Path | None) -> bool:
    """Whether a report goes to stdout (then the human summary goes to stderr); refuses two on stdout."""
    dashes = [p for p in paths if p is not None and str(p) == "-"]
    if len(dashes) > 1:
        raise InputError("only one of --json, --junit, --markdown and --html can be - (stdout)")
    return bool(dashes)


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from bridge.environment import version_line

    click.echo(version_line())
    ctx.exit()


@click.group(cls=BridgeGroup, context_settings=CONTEXT)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show bridge's version and the stack it drives (bridge env lists everything), and exit.")
def main() -> None:
    """Convert models between PyTorch, ONNX, TensorFlow and TFLite, and verify them with numbers.

    \b
    Examples:
      bridge convert model.pt2 --to tflite           # every artifact checked as it is made
      bridge verify model.bridge --json report.json  # replay fixed inputs through every artifact
      bridge verify model.pt2 --to all               # both in one command
      bridge env                                     # the stack, extras and devices here

    Every option can be set in the environment: BRIDGE_<COMMAND>_<OPTION>, e.g. BRIDGE_VERIFY_SAMPLES=16.
    """


def _convert_options[F: Callable[..., Any]](func: F) -> F:
    options = [
        click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path),
                     help="Output directory (default: MODEL.bridge beside the model)."),
        click.option("--from", "from_format", type=FormatList(allow_all=False),
                     help="Source format when the file name does not tell."),
        click.option("--via", type=FormatList(allow_all=False),
                     help="Force the route through these formats, comma-separated (e.g. onnx,tf)."),
        click.option("--opset", type=click.IntRange(7, 30), help="ONNX opset for hops that write ONNX."),
        click.option("--input-shape", "input_shape", type=InputShape(), multiple=True,
                     help="NAME:1,3,224,224 for TorchScript/module sources (repeatable)."),
        click.option("--example-inputs", type=click.Path(path_type=Path), help=".npz of example inputs keyed by input name."),
        click.option("--dynamic-batch", is_flag=True, help="Keep the batch dimension symbolic where the hops allow it."),
        click.option("--fp16", is_flag=True, help="Also write float16 TFLite."),
        click.option("--quantize", metavar="SCHEMES",
                     help="Also make quantized tflite/onnx artifacts: dynamic, int8, int8-io (TFLite), fp16; comma-separated."),
        click.option("--calibration", type=click.Path(path_type=Path),
                     help=".npz of representative inputs for int8 (as --inputs; default: generated, with a warning)."),
        click.option("--min-sqnr", type=float, metavar="DB",
                     help="Quantized artifacts: least SQNR in dB against the float parent (default per scheme)."),
        click.option("--min-top1", type=click.FloatRange(0, 1),
                     help="Quantized artifacts: least top-1 agreement with the float parent (default per scheme)."),
        click.option("--force", is_flag=True, help="Replace an existing output directory whole."),
        click.option("--cache-dir", "cache_dir", type=click.Path(path_type=Path),
                     help="Conversion cache directory (default: BRIDGE_CACHE_DIR, else ~/.cache/bridge; may be shared)."),
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Convert even when the cache holds this conversion, and store nothing (BRIDGE_NO_CACHE=1 too)."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each hop may take before it is stopped."),
        click.option("--max-memory", "max_memory", metavar="SIZE",
                     help="Memory the largest hop may use (8GB, 512MB): a route expected to need more is refused before it "
                          "starts, a hop that goes over is stopped. Default: the memory available. From 1 GiB of weights "
                          "the onnx -> tflite/tf hops take the large_weights candidate, planned at its own lower peak."),
        click.option("--trust-pickle", is_flag=True, help="Allow loading pickled PyTorch modules (runs code from the file)."),
        click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs code from the file)."),
        click.option("--torch-exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
                     help="torchscript: only the TorchScript candidate for torch -> onnx (a factory is saved as TorchScript)."),
        click.option("--no-check", "no_check", is_flag=True,
                     help="Do not run each artifact as it is made (the first candidate that converts is kept)."),
        click.option("--prefer", multiple=True, metavar="CANDIDATE",
                     help="Try this candidate first in the hops that have it (repeatable; see --candidates)."),
        click.option("--only", multiple=True, metavar="CANDIDATE",
                     help="Use only this candidate in the hops that have it (repeatable)."),
        click.option("--task", type=click.Choice(sorted(TASKS)),
                     help="Hugging Face folder: load it with this task's Auto class instead of the config's architectures."),
        click.option("--seq-len", type=click.IntRange(min=1), help="Hugging Face text model: sequence length of its inputs."),
        click.option("--image-size", type=click.IntRange(min=1), help="Hugging Face vision model: image size of its inputs."),
        click.option("--dynamic-seq", is_flag=True,
                     help="Hugging Face text model: keep the sequence axis symbolic where the hops allow it."),
        click.option("--kv-cache", is_flag=True,
                     help="Hugging Face causal LM: add its key/value cache to the outputs (present.N.key, present.N.value)."),
        click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for every output."),
        click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for every output."),
        click.option("--tol", multiple=True, type=OutputTolerance(), help="OUTPUT=ATOL for one output (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options_from(kw: dict[str, Any]) -> ConvertOptions:
    from bridge.memory import parse_size
    from bridge.options import ConvertOptions

    return ConvertOptions.build(
        from_format=kw["from_format"], via=kw["via"], opset=kw["opset"], dynamic_batch=kw["dynamic_batch"],
        fp16=kw["fp16"], timeout=kw["timeout"], trust_pickle=kw["trust_pickle"], trust_code=kw["trust_code"],
        max_memory=parse_size(kw["max_memory"]) if kw["max_memory"] else None,
        torch_exporter=kw["torch_exporter"], check=not kw["no_check"], prefer=kw["prefer"], only=kw["only"],
        atol=kw["atol"], rtol=kw["rtol"], tol=dict(kw["tol"]), task=kw["task"], seq_len=kw["seq_len"],
        image_size=kw["image_size"], dynamic_seq=kw["dynamic_seq"], kv_cache=kw["kv_cache"], quantize=kw["quantize"],
        calibration=kw["calibration"], min_sqnr=kw["min_sqnr"], min_top1=kw["min_top1"],
    )


def _run_convert(model: str, to: str, progress: Progress, kw: dict[str, Any]) -> Conversion:
    from bridge import early

    options = _options_from(kw)
    early.start_first_hop(model, to, options)  # it imports its libraries while this process imports its own
    try:
        from bridge.conversion import convert

        return convert(model, to, options, out_dir=kw["output"], force=kw["force"],
                       example_inputs=kw["example_inputs"], input_shapes=dict(kw["input_shape"]) or None,
                       progress=progress, cache=False if kw["no_cache"] else kw["cache_dir"])
    finally:
        early.close()


@main.command(context_settings=SUB_CONTEXT)
@click.argument("model")
@click.option("--to", "to", type=FormatList(), required=True,
              help="Target format(s): torch, onnx, tf, tflite, keras, tfjs, comma-separated; 'all' is torch, onnx, tf "
                   "and tflite where the source reaches them (name keras and tfjs: 'all,keras').")
@_convert_options
@click.option("--candidates", "candidates", is_flag=True,
              help="List each hop's candidates on the route, in the order they would be tried, and convert nothing.")
@_reports("manifest")
@_common
def convert(model: str, to: str, candidates: bool, json: Path | None, junit: Path | None,
            markdown: Path | None, verbose: int, quiet: bool, debug: bool, **kw: Any) -> None:
    """Convert MODEL (a file, SavedModel dir or package.module:factory) to --to FORMAT.

    Each artifact is run in its own runtime as it is made and compared with its parent; each hop
    tries its candidates in order and keeps the first that agrees. Exit 1 when a hop has no
    candidate that agrees (the closest artifact is kept, every attempt is in the manifest).

    \b
    Examples:
      bridge convert resnet18.pt2 --to tflite
      bridge convert model.onnx --to tf,tflite -o out/model.bridge --force
      bridge convert mypkg.models:build --input-shape x:1,3,224,224 --to all
      bridge convert lstm.pt2 --to tflite --candidates          # what would be tried
      bridge convert model.pt2 --to onnx --json - | jq .artifacts # the manifest on stdout
    """
    setup_logging(verbose, quiet)
    with _user_errors(debug):
        to_stderr = _one_stdout(json, junit, markdown)
        if candidates:
            _print_candidates(model, to, kw)
            return
        progress = Progress(quiet or to_stderr, verbose)
        try:
            conversion = _run_convert(model, to, progress, kw)
        except HopError as exc:
            from bridge.conversion import Conversion

            if isinstance(exc.conversion, Conversion):
                _write_reports(exc.conversion, json, junit, markdown)
                print_conversion(exc.conversion, to_stderr=True)
            raise
        finally:
            progress.close()
        _write_reports(conversion, json, junit, markdown)
        print_conversion(conversion, to_stderr=to_stderr)


def _write_text(path: Path, text: str) -> None:
    """`text` to stdout when `path` is ``-``, else written to `path` whole (nothing half-written)."""
    if str(path) == "-":
        click.echo(text, nl=False)
        return
    from bridge.staging import atomic_write_text

    atomic_write_text(path, text)


def _write_reports(conversion: Conversion, *paths: Path | None) -> None:
    for path, kind in zip(paths, ("json", "junit", "markdown"), strict=True):
        if path is not None:
            _write_text(path, conversion.render(kind))


def _print_candidates(model: str, to: str, kw: dict[str, Any]) -> None:
    from bridge.conversion import candidates

    if Path(model).is_file() and Path(model).suffix.lower() == ".onnx":
        from bridge.onnx_check import check, render_text

        for line in render_text(check(model, to)):  # the pre-flight: what the route is known to lose
            click.echo(line)
    for hop, listed in candidates(model, to, _options_from(kw), input_shapes=dict(kw["input_shape"]) or None,
                                  example_inputs=kw["example_inputs"]):
        click.echo(f"{hop.name} ({hop.tool}):")
        for number, candidate in enumerate(listed, 1):
            click.echo(f"  {number}. {candidate.name:<18} {candidate.description}")
        if not listed:
            click.echo("  (none: --only names no candidate of this hop)")


@main.command(context_settings=SUB_CONTEXT)
@click.argument("target", required=False)
@click.option("--to", "to", type=FormatList(), help="With a MODEL: convert to this format first, then verify.")
@_convert_options
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of inputs per source input: one sample, or [samples, *shape].")
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed for generated inputs.")
@click.option("--samples", type=click.IntRange(min=1), default=defaults.SAMPLES, show_default=True, help="Number of generated samples.")
@click.option("--int-high", type=click.IntRange(min=1), help="Exclusive upper bound for generated integer inputs.")
@click.option("--device", "device", multiple=True, type=click.Choice(["cpu", "cuda"]), help="Devices (default: cpu and cuda).")
@click.option("--allow-unavailable", is_flag=True,
              help="Pass even when an artifact could run on none of the devices asked for (default: exit 2).")
@click.option("--allow-changed", is_flag=True,
              help="Verify artifacts changed since convert (their sha256 differs from the manifest's; default: exit 2).")
@click.option("--factory", metavar="PACKAGE.MODULE:FACTORY",
              help="Rebuild a factory source and check the saved program against it; only this reference is imported.")
@click.option("--latency-runs", type=click.IntRange(min=1), default=defaults.LATENCY_RUNS, show_default=True,
              help="Timed runs per representation.")
@click.option("--localize", is_flag=True,
              help="For each hop over tolerance, name the first operation that diverges (on its worst sample, CPU).")
@click.option("--quantized-layers", type=click.IntRange(min=0), default=defaults.QUANTIZED_LAYERS, show_default=True,
              metavar="N", help="Name the N operations of each quantized artifact that lose the most (0: none).")
@_reports("report")
@click.option("--html", "html", type=ReportTarget(), help="Write the report as one self-contained HTML page to PATH, or -.")
@click.option("--mlflow", "mlflow", is_flag=True,
              help="Log params, metrics and the reports to MLflow (the tracking URI you set; default ./mlruns).")
@_common
def verify(target: str | None, to: str | None, inputs: Path | None, seed: int, samples: int, int_high: int | None,
           device: tuple[str, ...], allow_unavailable: bool, allow_changed: bool, factory: str | None,
           latency_runs: int, localize: bool, quantized_layers: int, json: Path | None, junit: Path | None,
           markdown: Path | None, html: Path | None, mlflow: bool,
           verbose: int, quiet: bool, debug: bool, **kw: Any) -> None:
    """Verify DIR (a convert output), or convert MODEL --to FORMAT and verify it.

    \b
    Examples:
      bridge verify model.bridge                      # every representation, cpu and cuda
      bridge verify model.bridge --device cpu --inputs real.npz --junit results.xml
      bridge verify model.bridge --json - | jq .passed
      bridge verify resnet18.pt2 --to all -o out.bridge --force
    """
    from bridge.options import LocalizeOptions, VerifyOptions
    from bridge.verification.report import ReportPaths
    from bridge.verification.run import output_dir_for
    from bridge.verification.run import verify as run_verify

    setup_logging(verbose, quiet)
    with _user_errors(debug):
        to_stderr = _one_stdout(json, junit, markdown, html)
        progress = Progress(quiet or to_stderr, verbose)
        options = VerifyOptions.build(
            inputs=inputs, seed=seed, samples=samples, int_high=int_high, devices=device or None, atol=kw["atol"],
            rtol=kw["rtol"], tol=dict(kw["tol"]), latency_runs=latency_runs, timeout=kw["timeout"],
            trust_pickle=kw["trust_pickle"], trust_code=kw["trust_code"], allow_unavailable=allow_unavailable,
            allow_changed=allow_changed, factory=factory, localize=LocalizeOptions() if localize else None,
            min_sqnr=kw["min_sqnr"], min_top1=kw["min_top1"], quantized_layers=quantized_layers,
        )
        reports = ReportPaths(json, junit, markdown, html)
        reports.check()
        subject: Any = output_dir_for(target, converting=to is not None)
        if subject is None:
            assert target is not None and to is not None
            subject = _run_convert(target, to, progress, kw)
            print_conversion(subject, to_stderr=to_stderr)
        if mlflow:
            import importlib.util

            if importlib.util.find_spec("mlflow") is None:
                raise MissingExtraError("--mlflow needs MLflow: pip install 'bridge[mlflow]'")
        try:
            report = run_verify(subject, options, reports=reports, progress=progress, mlflow=mlflow)
        finally:
            progress.close()
        print_report(report, quiet, to_stderr=to_stderr)
        print_localization(report, to_stderr=to_stderr)
        if report.exit_code:
            click.echo(f"bridge: {'error' if report.exit_code == 2 else 'drift'}: "
                       + report.summary().replace("\n", "\nbridge: "), err=True)
        sys.exit(report.exit_code)


@main.command(context_settings=SUB_CONTEXT)
@click.argument("target", required=False)
@click.option("--hop", metavar="PARENT->CHILD",
              help="The hop to localise, by the folder's names ('source->onnx', quoted) or formats (torch:onnx); "
                   "default: every failing hop.")
@click.option("--output", "output", metavar="NAME", help="Follow this source output only (default: all).")
@click.option("--sample", type=click.IntRange(min=0), help="Localise on this sample (default: each hop's worst).")
@click.option("--top", type=click.IntRange(min=1), default=defaults.LOCALIZE_TOP, show_default=True,
              help="Operations listed by the drift they add, in graph order.")
@click.option("--bisect", is_flag=True, help="Cut the parent ONNX graph and convert each cut, even where tensors join by name.")
@click.option("--max-steps", type=click.IntRange(min=1), default=defaults.BISECT_MAX_STEPS, show_default=True,
              help="Bisection steps at most.")
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of inputs per source input: one sample, or [samples, *shape].")
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed for generated inputs.")
@click.option("--samples", type=click.IntRange(min=1), default=defaults.SAMPLES, show_default=True, help="Number of generated samples.")
@click.option("--int-high", type=click.IntRange(min=1), help="Exclusive upper bound for generated integer inputs.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for every output and intermediate.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for every output and intermediate.")
@click.option("--tol", multiple=True, type=OutputTolerance(), help="OUTPUT=ATOL for one output (repeatable).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each step may take before it is stopped.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading pickled PyTorch modules (runs code from the file).")
@click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs code from the file).")
@click.option("--allow-changed", is_flag=True, help="Explain artifacts changed since convert (default: exit 2).")
@_reports("report")
@_common
def explain(target: str | None, hop: str | None, output: str | None, sample: int | None, top: int, bisect: bool,
            max_steps: int, inputs: Path | None, seed: int, samples: int, int_high: int | None, atol: float | None,
            rtol: float | None, tol: tuple[tuple[str, float], ...], timeout: float | None, trust_pickle: bool,
            trust_code: bool, allow_changed: bool, json: Path | None, junit: Path | None, markdown: Path | None,
            verbose: int, quiet: bool, debug: bool) -> None:
    """Name where DIR's hops diverge: the first operation, in graph order, whose output leaves tolerance
    while its inputs are within it, in the source's terms (module path, file:line).

    Exit 0: nothing diverges; 1: a hop diverges (localised or not); 2: bad input.

    \b
    Examples:
      bridge explain model.bridge                       # every hop over tolerance, each on its worst sample
      bridge explain model.bridge --hop 'onnx->tflite' --output logits --sample 3
      bridge explain model.bridge --hop onnx:tf --bisect --json where.json
    """
    from bridge.localization.explain import explain_report
    from bridge.options import LocalizeOptions, VerifyOptions
    from bridge.verification.report import ReportPaths
    from bridge.verification.run import output_dir_for

    setup_logging(verbose, quiet)
    with _user_errors(debug):
        to_stderr = _one_stdout(json, junit, markdown)
        progress = Progress(quiet or to_stderr, verbose)
        localize = LocalizeOptions(hop=hop, output=output, sample=sample, top=top, max_steps=max_steps, bisect=bisect)
        localize.hop_pair()
        options = VerifyOptions.build(
            inputs=inputs, seed=seed, samples=samples, int_high=int_high, atol=atol, rtol=rtol, tol=dict(tol),
            timeout=timeout, trust_pickle=trust_pickle, trust_code=trust_code, allow_changed=allow_changed,
            localize=localize,
        )
        reports = ReportPaths(json, junit, markdown)
        reports.check()
        folder = output_dir_for(target)
        try:
            report = explain_report(folder, options, reports=reports, progress=progress)
        finally:
            progress.close()
        print_localization(report, to_stderr=to_stderr, everything=True)
        code = explain_exit_code(report, named=hop is not None)
        if code == 2 or (code == 1 and not any(found.diverges for found in report.localization)):
            click.echo(f"bridge: {'error' if code == 2 else 'drift'}: " + report.summary().replace("\n", "\nbridge: "),
                       err=True)
        sys.exit(code)


@main.command(context_settings=SUB_CONTEXT)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--to", "to", type=FormatList(), required=True, help="Target format(s), as for convert.")
@click.option("--json", "json_path", type=ReportTarget(), help="Write the check as JSON to PATH, or - for stdout.")
@_common
def check(model: Path, to: str, json_path: Path | None, verbose: int, quiet: bool, debug: bool) -> None:
    """Before converting an ONNX MODEL: which of its ops, types and opset each route is known to lose.

    Lists the ops against bridge's measured coverage (ONNX's node tests converted to each target,
    docs/coverage.md), with the target that covers an op where the asked one fails. Converts
    nothing. Exit 1 when something is known to block a target, else 0.

    \b
    Examples:
      bridge check model.onnx --to tflite
      bridge check model.onnx --to tflite,torch --json -
    """
    import json

    from bridge.onnx_check import check as check_model
    from bridge.onnx_check import render_text

    setup_logging(verbose, quiet)
    with _user_errors(debug):
        found = check_model(model, to)
        if json_path is not None:
            from bridge import records

            _write_text(json_path, json.dumps({**records.to_json(found), "passed": found.passed, "exit_code": found.exit_code},
                                              indent=2) + "\n")
        if str(json_path) != "-":
            for line in render_text(found):
                click.echo(line)
    sys.exit(found.exit_code)


@main.command(context_settings=SUB_CONTEXT)
@click.argument("saved", metavar="REPORT.json", type=click.Path(path_type=Path))
@_reports("report")
@click.option("--html", "html", type=ReportTarget(), help="Write the report as one self-contained HTML page to PATH, or -.")
@_common
def report(saved: Path, json: Path | None, junit: Path | None, markdown: Path | None, html: Path | None,
           verbose: int, quiet: bool, debug: bool) -> None:
    """Render a saved verify report (its JSON) again: as HTML, Markdown, JUnit or JSON.

    \b
    Examples:
      bridge report out.bridge/verify/report.json --html report.html
      bridge report report.json --markdown -
    """
    from bridge.verification.report import Report, ReportPaths

    setup_logging(verbose, quiet)
    with _user_errors(debug):
        _one_stdout(json, junit, markdown, html)
        paths = ReportPaths(json, junit, markdown, html)
        if not any((json, junit, markdown, html)):
            raise InputError(f"{saved}: say what to write: --html PATH, --markdown PATH, --junit PATH or --json PATH")
        paths.check()
        Report.read(saved).write_all(paths)


@main.command(context_settings=SUB_CONTEXT)
@_common
def formats(verbose: int, quiet: bool, debug: bool) -> None:
    """List the sources bridge takes, formats, their runtimes and the hops, and which are usable in this install.

    \b
    Examples:
      bridge formats
    """
    from bridge.formats import FORMATS
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.sources import DEFAULT_RESOLVERS

    def state(missing: tuple[str, ...], hint: str) -> str:
        return "ok" if not missing else f"missing {', '.join(missing)}: {hint}"

    click.echo("sources:")
    for resolver in DEFAULT_RESOLVERS:
        hint = f"pip install 'bridge[{resolver.extra}]'"
        click.echo(f"  {resolver.kind.value:<17} {state(resolver.missing(), hint):<4} {resolver.description}")
    click.echo("formats:")
    for spec in FORMATS.values():
        click.echo(f"  {spec.format.value:<10} {spec.description}")
    click.echo("runtimes:")
    for spec in FORMATS.values():
        for runner in spec.runners:
            click.echo(f"  {spec.format.value:<10} {runner.runtime:<17} {'/'.join(runner.devices):<9} "
                       f"{state(runner.missing(), runner.install_hint)}")
    click.echo("hops:")
    for hop in DEFAULT_REGISTRY:
        click.echo(f"  {hop.name:<17} {hop.tool:<24} {state(hop.missing(), hop.install_hint)}")


@main.command(context_settings=SUB_CONTEXT)
@click.option("--json", "json_path", type=ReportTarget(), help="Write it as JSON to PATH, or - for stdout.")
def env(json_path: Path | None) -> None:
    """List the stack bridge drives, which extras and devices are usable here, and Python.

    \b
    Examples:
      bridge env
      bridge env --json -
    """
    import dataclasses
    import json

    from bridge.environment import environment

    found = environment()
    if json_path is not None:
        _write_text(json_path, json.dumps({**dataclasses.asdict(found), "extras": found.extras()}, indent=2) + "\n")
        if str(json_path) == "-":
            return
    click.echo(f"bridge {found.bridge}, Python {found.python} on {found.platform}")
    click.echo("stack:")
    for name, version in found.distributions:
        click.echo(f"  {name:<16} {version or 'not installed'}")
    click.echo("extras:")
    for extra, ok in found.extras().items():
        hint = TFJS_INSTALL if extra == "tfjs" else "pip install " + repr(f"bridge[{extra}]")
        click.echo(f"  {extra:<16} {'usable' if ok else 'incomplete: ' + hint}")
    missing = [f"{u.name} (needs {', '.join(u.missing)})" for u in (*found.hops, *found.runtimes) if u.missing]
    for line in missing:
        click.echo(f"  missing: {line}")
    click.echo("devices:")
    click.echo("  cpu              usable")
    click.echo(f"  cuda             {'NVIDIA driver ' + found.cuda if found.cuda else 'no NVIDIA driver on this machine'}")


@main.group(context_settings=SUB_CONTEXT)
def zoo() -> None:
    """Reference models to try bridge on.

    \b
    Examples:
      bridge zoo list
      bridge zoo export resnet18 -o models
    """


@zoo.command("list", context_settings=SUB_CONTEXT)
def zoo_list() -> None:
    """One model a line: name, source format, description.

    \b
    Examples:
      bridge zoo list
    """
    from bridge.zoo import MODELS

    for model in MODELS:
        click.echo(f"{model.name:<20} {model.source:<6} {model.description}")


@zoo.command("export", context_settings=SUB_CONTEXT)
@click.argument("name")
@click.option("-o", "--output", "--out", "output", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Directory to write the model and its example inputs into.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@_common
def zoo_export(name: str, output: Path, force: bool, verbose: int, quiet: bool, debug: bool) -> None:
    """Write zoo model NAME in its source format, with its example inputs.

    \b
    Examples:
      bridge zoo export cnn -o demo
      bridge zoo export resnet18 -o models --force
    """
    setup_logging(verbose, quiet)
    with _user_errors(debug):
        from bridge.zoo.export import export

        result = export(name, output, force=force)
        click.echo(f"model: {result.model_path}")
        click.echo(f"example inputs: {result.inputs_path}")


# Many models at once, and the conversion cache: their commands live in bridge.cli_batch.
from bridge.cli_batch import batch, cache  # noqa: E402

main.add_command(batch)
main.add_command(cache)
