"""The ``bridge`` command: a thin layer over bridge.convert and bridge.verify.

Each command builds the library's option records from its flags, calls the library, and prints
what it returns. Exit codes (docs/tolerances.md): 0 done / verified; 1 drift over tolerance;
2 bad input or usage (one line on stderr; the traceback with --debug); 3 an internal error (the
traceback in a file); 130 Ctrl-C; 143 SIGTERM. Nothing here imports a framework: the library
modules are imported inside the commands.
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
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bridge import __version__, defaults
from bridge.cli_params import FormatList, InputShape, OutputTolerance
from bridge.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED, BridgeError, HopError

if TYPE_CHECKING:
    from bridge.conversion import Conversion, ProgressEvent
    from bridge.options import ConvertOptions
    from bridge.verification.report import Report

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the same cleanup runs as for Ctrl-C."""


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
        signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as exc:
            hint = f"Try '{exc.ctx.command_path} -h' for help." if exc.ctx is not None else ""
            click.echo(f"bridge: error: {exc.format_message()}" + (f"\n{hint}" if hint else ""), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"bridge: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Abort, KeyboardInterrupt):
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
    click.echo(f"bridge: {where}; please report it to bridge's maintainers with that file and `bridge --version`",
               err=True)
    sys.exit(EXIT_INTERNAL)


def _fail(message: str, debug: bool, detail: str = "") -> None:
    click.echo(f"bridge: error: {message}", err=True)
    if debug and detail:
        click.echo(detail, err=True)
    if debug:
        traceback.print_exc()


@contextmanager
def _user_errors(debug: bool) -> Iterator[None]:
    """Turn a BridgeError into one line on stderr and its exit code; let bugs show a traceback."""
    try:
        yield
    except BridgeError as exc:
        _fail(str(exc), debug, getattr(exc, "detail", ""))
        sys.exit(exc.exit_code)


def _debug_option[F: Callable[..., Any]](func: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks and converter output on errors.")(func)


class _Progress:
    """Per-step progress: a rich status line on a terminal, plain lines otherwise, nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._status: Any = None
        if self.tty and not quiet:
            from rich.console import Console

            self.console = Console(stderr=True)

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.kind == "fallback":
            self._stop()
            click.echo(f"  {event.step}: {event.message}", err=True)
            return
        if self.tty:
            if event.kind == "start":
                self._stop()
                self._status = self.console.status(f"[bold]{event.step}[/bold] ...")
                self._status.start()
                return
            self._stop()
            mark = "[green]done[/green]" if event.kind == "done" else "[red]FAILED[/red]"
            self.console.print(f"  {event.step:<16} {mark} {event.seconds:6.1f} s {event.message}")
        elif event.kind != "start":
            click.echo(f"{event.step}: {event.kind} in {event.seconds:.1f} s {event.message}".rstrip(), err=True)

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def message(self, text: str) -> None:
        if not self.quiet and not self.tty:
            click.echo(text, err=True)


@click.group(cls=BridgeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bridge")
def main() -> None:
    """Convert models between PyTorch, ONNX, TensorFlow and TFLite, and verify them with numbers."""


def _convert_options[F: Callable[..., Any]](func: F) -> F:
    options = [
        click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
                     help="Output directory (default: MODEL.bridge beside the model)."),
        click.option("--from", "from_format", type=FormatList(allow_all=False),
                     help="Source format when the file name does not tell."),
        click.option("--via", type=FormatList(allow_all=False),
                     help="Force the route through these formats, comma-separated (e.g. onnx,tf)."),
        click.option("--opset", type=click.IntRange(7, 30), help="ONNX opset for hops that write ONNX."),
        click.option("--input-shape", "input_shapes", type=InputShape(), multiple=True,
                     help="NAME:1,3,224,224 for TorchScript/module sources (repeatable)."),
        click.option("--example-inputs", type=click.Path(path_type=Path), help=".npz of example inputs keyed by input name."),
        click.option("--dynamic-batch", is_flag=True, help="Keep the batch dimension symbolic where the hops allow it."),
        click.option("--fp16", is_flag=True, help="Also write float16 TFLite."),
        click.option("--force", is_flag=True, help="Replace an existing output directory whole."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each hop may take before it is stopped."),
        click.option("--trust-pickle", is_flag=True, help="Allow loading pickled PyTorch modules (runs code from the file)."),
        click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs code from the file)."),
        click.option("--torch-exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
                     help="torchscript: only the TorchScript candidate for torch -> onnx (a factory is saved as TorchScript)."),
        click.option("--no-check", "no_check", is_flag=True,
                     help="Do not run each artifact as it is made (today's unchecked conversion: the first candidate that converts)."),
        click.option("--prefer", multiple=True, metavar="CANDIDATE",
                     help="Try this candidate first in the hops that have it (repeatable; see --candidates)."),
        click.option("--only", multiple=True, metavar="CANDIDATE",
                     help="Use only this candidate in the hops that have it (repeatable)."),
        click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for every output."),
        click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for every output."),
        click.option("--tol", multiple=True, type=OutputTolerance(), help="OUTPUT=ATOL for one output (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options_from(kw: dict[str, Any]) -> ConvertOptions:
    from bridge.options import ConvertOptions

    return ConvertOptions.build(
        from_format=kw["from_format"], via=kw["via"], opset=kw["opset"], dynamic_batch=kw["dynamic_batch"],
        fp16=kw["fp16"], timeout=kw["timeout"], trust_pickle=kw["trust_pickle"], trust_code=kw["trust_code"],
        torch_exporter=kw["torch_exporter"], check=not kw["no_check"], prefer=kw["prefer"], only=kw["only"],
        atol=kw["atol"], rtol=kw["rtol"], tol=dict(kw["tol"]),
    )


def _run_convert(model: str, to: str, progress: _Progress, kw: dict[str, Any]) -> Conversion:
    from bridge.conversion import convert

    return convert(model, to, _options_from(kw), out_dir=kw["out_dir"], force=kw["force"],
                   example_inputs=kw["example_inputs"], input_shapes=dict(kw["input_shapes"]) or None,
                   progress=progress)


@main.command()
@click.argument("model")
@click.option("--to", "to", type=FormatList(), required=True, help="Target format(s): torch, onnx, tf, tflite, comma-separated, or 'all'.")
@_convert_options
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.option("--candidates", "list_candidates", is_flag=True,
              help="List each hop's candidates on the route, in the order they would be tried, and convert nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@_debug_option
def convert(model: str, to: str, as_json: bool, list_candidates: bool, quiet: bool, debug: bool, **kw: Any) -> None:
    """Convert MODEL (a file, SavedModel dir or package.module:factory) to --to FORMAT.

    Each artifact is run in its own runtime as it is made and compared with its parent; each hop
    tries its candidates in order and keeps the first that agrees. Exit 1 when a hop has no
    candidate that agrees (the closest artifact is kept, every attempt is in the manifest).
    """
    progress = _Progress(quiet or as_json)
    with _user_errors(debug):
        if list_candidates:
            _print_candidates(model, to, kw)
            return
        try:
            conversion = _run_convert(model, to, progress, kw)
        except HopError as exc:
            from bridge.conversion import Conversion

            if isinstance(exc.conversion, Conversion) and not as_json:
                _print_conversion(exc.conversion)
            raise
        if as_json:
            click.echo(conversion.manifest.dumps(), nl=False)
            return
        _print_conversion(conversion)


def _print_candidates(model: str, to: str, kw: dict[str, Any]) -> None:
    from bridge.conversion import candidates

    for hop, listed in candidates(model, to, _options_from(kw), input_shapes=dict(kw["input_shapes"]) or None,
                                  example_inputs=kw["example_inputs"]):
        click.echo(f"{hop.name} ({hop.tool}):")
        for number, candidate in enumerate(listed, 1):
            click.echo(f"  {number}. {candidate.name:<18} {candidate.description}")
        if not listed:
            click.echo("  (none: --only names no candidate of this hop)")


def _print_conversion(conversion: Conversion) -> None:
    click.echo(f"route: {'; '.join(conversion.manifest.route)}")
    for artifact in conversion.artifacts:
        passed_over = [a for a in artifact.attempts if a.candidate != artifact.candidate and a.outcome != "not applicable"]
        if passed_over and artifact.precision == "float32":
            tried = "; ".join(f"{a.candidate} {a.outcome}: {a.message}" for a in passed_over)
            worst = artifact.check.worst() if artifact.check is not None else None
            figure = f", max abs {worst.max_abs:.2g}" if worst is not None and worst.max_abs is not None else ""
            click.echo(f"{artifact.hop.replace('->', ' -> ')}: {tried}; kept {artifact.candidate}{figure}", err=True)
    for failure in conversion.failures:
        resolved = f"; made instead by the longer route {failure.resolved_by}" if failure.resolved_by else ""
        click.echo(f"{failure.hop.replace('->', ' -> ')}: {failure.error}{resolved}", err=True)
    for artifact in conversion.artifacts:
        if artifact.check is None:
            state = "not checked"
        else:
            worst = artifact.check.worst()
            figure = f", max abs {worst.max_abs:.2g}" if worst is not None and worst.max_abs is not None else ""
            state = f"{'verified' if artifact.check.passed else 'DID NOT VERIFY'} ({artifact.candidate}{figure})"
        click.echo(f"  {artifact.key:<15} {conversion.out_dir / artifact.path}  {state}")
    click.echo(f"manifest: {conversion.manifest_path}")


@main.command()
@click.argument("target", required=False)
@click.option("--to", "to", type=FormatList(), help="With a MODEL: convert to this format first, then verify.")
@_convert_options
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of inputs ([samples, *shape] per source input) to replay.")
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed for generated inputs.")
@click.option("--samples", type=click.IntRange(min=1), default=defaults.SAMPLES, show_default=True, help="Number of generated samples.")
@click.option("--int-high", type=click.IntRange(min=1), help="Exclusive upper bound for generated integer inputs.")
@click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]), help="Devices (default: cpu and cuda).")
@click.option("--allow-unavailable", is_flag=True,
              help="Pass even when an artifact could run on none of the devices asked for (default: exit 2).")
@click.option("--allow-changed", is_flag=True,
              help="Verify artifacts changed since convert (their sha256 differs from the manifest's; default: exit 2).")
@click.option("--factory", metavar="PACKAGE.MODULE:FACTORY",
              help="Rebuild a factory source and check the saved program against it; only this reference is imported.")
@click.option("--latency-runs", type=click.IntRange(min=1), default=defaults.LATENCY_RUNS, show_default=True,
              help="Timed runs per representation.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@_debug_option
def verify(target: str | None, to: str | None, inputs: Path | None, seed: int, samples: int, int_high: int | None,
           devices: tuple[str, ...], allow_unavailable: bool, allow_changed: bool, factory: str | None,
           latency_runs: int, json_path: Path | None, junit_path: Path | None,
           markdown_path: Path | None, quiet: bool, debug: bool, **kw: Any) -> None:
    """Verify DIR (a convert output), or convert MODEL --to FORMAT and verify it."""
    from bridge.options import VerifyOptions
    from bridge.verification.report import ReportPaths
    from bridge.verification.run import output_dir_for
    from bridge.verification.run import verify as run_verify

    progress = _Progress(quiet)
    with _user_errors(debug):
        options = VerifyOptions.build(
            inputs=inputs, seed=seed, samples=samples, int_high=int_high, devices=devices or None, atol=kw["atol"],
            rtol=kw["rtol"], tol=dict(kw["tol"]), latency_runs=latency_runs, timeout=kw["timeout"],
            trust_pickle=kw["trust_pickle"], trust_code=kw["trust_code"], allow_unavailable=allow_unavailable,
            allow_changed=allow_changed, factory=factory,
        )
        reports = ReportPaths(json_path, junit_path, markdown_path)
        reports.check()
        subject: Any = output_dir_for(target, converting=to is not None)
        if subject is None:
            assert target is not None and to is not None
            subject = _run_convert(target, to, progress, kw)
            _print_conversion(subject)
        report = run_verify(subject, options, reports=reports, progress=progress.message)
        _print_report(report, quiet)
        if report.exit_code:
            click.echo(f"bridge: {'error' if report.errors else 'drift'}: " + report.summary().replace("\n", "\nbridge: "), err=True)
        sys.exit(report.exit_code)


def _print_report(report: Report, quiet: bool) -> None:
    from bridge.verification.report import TABLE_HEADERS, table_rows

    rows = table_rows(report)
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"bridge verify: {'passed' if report.passed else 'FAILED'}")
        for header in TABLE_HEADERS:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(TABLE_HEADERS)]
        for row in [list(TABLE_HEADERS), *rows]:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not quiet:
        click.echo(f"inputs: {report.inputs.path} (sha256 {report.inputs.sha256[:12]}, {report.inputs.samples} samples)")
        for note in report.notes:
            click.echo(f"note: {note}")


@main.command()
@_debug_option
def formats(debug: bool) -> None:
    """List formats, their runtimes and the hops, and which are usable in this install."""
    from bridge.formats import FORMATS
    from bridge.registry import DEFAULT_REGISTRY

    def state(missing: tuple[str, ...], extra: str) -> str:
        return "ok" if not missing else f"missing {', '.join(missing)}: pip install 'bridge[{extra}]'"

    click.echo("formats:")
    for spec in FORMATS.values():
        click.echo(f"  {spec.format.value:<7} {spec.description}")
    click.echo("runtimes:")
    for spec in FORMATS.values():
        for runner in spec.runners:
            click.echo(f"  {spec.format.value:<7} {runner.runtime:<14} {'/'.join(runner.devices):<9} "
                       f"{state(runner.missing(), runner.extra)}")
    click.echo("hops:")
    for hop in DEFAULT_REGISTRY:
        click.echo(f"  {hop.name:<14} {hop.tool:<24} {state(hop.missing(), hop.extra)}")


@main.group()
def zoo() -> None:
    """Reference models to try bridge on."""


@zoo.command("list")
def zoo_list() -> None:
    """One model a line: name, source format, description."""
    from bridge.zoo import MODELS

    for model in MODELS:
        click.echo(f"{model.name:<20} {model.source:<6} {model.description}")


@zoo.command("export")
@click.argument("name")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("."), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@_debug_option
def zoo_export(name: str, out_dir: Path, force: bool, debug: bool) -> None:
    """Write zoo model NAME in its source format, with its example inputs."""
    with _user_errors(debug):
        from bridge.zoo.export import export

        result = export(name, out_dir, force=force)
        click.echo(f"model: {result.model_path}")
        click.echo(f"example inputs: {result.inputs_path}")
