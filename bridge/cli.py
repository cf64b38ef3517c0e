"""The ``bridge`` command: a thin layer over bridge.convert and bridge.verify.

Exit codes: 0 done / verified; 1 drift over tolerance; 2 bad input, unsupported route, a failed
hop or a representation that could not run (one line on stderr; the traceback with --debug).
Nothing here imports a framework; the library modules are imported inside the commands.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge import __version__, defaults
from bridge.errors import BridgeError, InputError

F = TypeVar("F", bound=Callable[..., Any])


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


def _debug_option(func: F) -> F:
    return click.option("--debug", is_flag=True, help="Show tracebacks and converter output on errors.")(func)


def _parse_tol(values: Sequence[str]) -> dict[str, float]:
    out = {}
    for value in values:
        name, sep, number = value.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name] = float(number)
        except ValueError:
            raise InputError(f"--tol {value!r}: expected OUTPUT=ATOL, e.g. output_0=1e-3") from None
    return out


def _input_shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]] | None:
    from bridge.inputs import parse_input_shape

    shapes = dict(parse_input_shape(v) for v in values)
    return shapes or None


class _Progress:
    """Per-hop progress: a rich status line on a terminal, plain lines otherwise, nothing with --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._status: Any = None
        if self.tty and not quiet:
            from rich.console import Console

            self.console = Console(stderr=True)

    def __call__(self, event: Any) -> None:
        if self.quiet:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bridge")
def main() -> None:
    """Convert models between PyTorch, ONNX, TensorFlow and TFLite, and verify them with numbers."""


def _convert_options(func: F) -> F:
    options = [
        click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Output directory (default: MODEL.bridge beside the model)."),
        click.option("--from", "from_format", help="Source format when the file name does not tell."),
        click.option("--via", help="Force the route through these formats, comma-separated (e.g. onnx,tf)."),
        click.option("--opset", type=int, help="ONNX opset for hops that write ONNX."),
        click.option("--input-shape", "input_shape", multiple=True, help="NAME:1,3,224,224 for TorchScript/module sources (repeatable)."),
        click.option("--example-inputs", type=click.Path(path_type=Path), help=".npz of example inputs keyed by input name."),
        click.option("--dynamic-batch", is_flag=True, help="Keep the batch dimension symbolic where the hops allow it."),
        click.option("--fp16", is_flag=True, help="Also write float16 TFLite."),
        click.option("--force", is_flag=True, help="Replace an existing output directory whole."),
        click.option("--timeout", type=float, help="Seconds each hop may take before it is stopped."),
        click.option("--trust-pickle", is_flag=True, help="Allow loading pickled PyTorch modules (runs code from the file)."),
        click.option("--trust-code", is_flag=True, help="Allow Keras Lambda layers (runs code from the file)."),
        click.option("--torch-exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True,
                     help="torch.onnx exporter for torch -> onnx; torchscript needs a .pt or package.module:factory source."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_convert(model: str, to: str, progress: _Progress, **kw: Any) -> Any:
    from bridge.conversion import convert

    return convert(
        model, to, out_dir=kw["out_dir"], from_format=kw["from_format"],
        via=[v for v in (kw["via"] or "").split(",") if v], example_inputs=kw["example_inputs"],
        input_shapes=_input_shapes(kw["input_shape"]), opset=kw["opset"], dynamic_batch=kw["dynamic_batch"],
        fp16=kw["fp16"], timeout=kw["timeout"], force=kw["force"], trust_pickle=kw["trust_pickle"],
        trust_code=kw["trust_code"], torch_exporter=kw["torch_exporter"], progress=progress,
    )


@main.command()
@click.argument("model")
@click.option("--to", "to", required=True, help="Target format(s): torch, onnx, tf, tflite, comma-separated, or 'all'.")
@_convert_options
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@_debug_option
def convert(model: str, to: str, as_json: bool, quiet: bool, debug: bool, **kw: Any) -> None:
    """Convert MODEL (a file, SavedModel dir or package.module:factory) to --to FORMAT."""
    progress = _Progress(quiet or as_json)
    with _user_errors(debug):
        conversion = _run_convert(model, to, progress, **kw)
        if as_json:
            click.echo(conversion.manifest.dumps(), nl=False)
            return
        _print_conversion(conversion)


def _print_conversion(conversion: Any) -> None:
    click.echo(f"route: {conversion.route.describe()}")
    for artifact in conversion.artifacts:
        extra = f"  (fallback: {artifact.fallback})" if artifact.fallback else ""
        click.echo(f"  {artifact.key:<15} {conversion.out_dir / artifact.path}{extra}")
    click.echo(f"manifest: {conversion.manifest_path}")


@main.command()
@click.argument("target", required=False)
@click.option("--to", "to", help="With a MODEL: convert to this format first, then verify.")
@_convert_options
@click.option("--inputs", type=click.Path(path_type=Path), help=".npz of inputs ([samples, *shape] per source input) to replay.")
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed for generated inputs.")
@click.option("--samples", type=int, default=defaults.SAMPLES, show_default=True, help="Number of generated samples.")
@click.option("--int-high", type=int, help="Exclusive upper bound for generated integer inputs.")
@click.option("--device", "devices", multiple=True, type=click.Choice(["cpu", "cuda"]), help="Devices (default: cpu and cuda).")
@click.option("--atol", type=float, help="Absolute tolerance for every output.")
@click.option("--rtol", type=float, help="Relative tolerance for every output.")
@click.option("--tol", multiple=True, help="OUTPUT=ATOL for one output (repeatable).")
@click.option("--latency-runs", type=int, default=defaults.LATENCY_RUNS, show_default=True, help="Timed runs per representation.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report here.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write a JUnit XML report here.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Write a Markdown summary here.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@_debug_option
def verify(target: str | None, to: str | None, inputs: Path | None, seed: int, samples: int, int_high: int | None,
           devices: tuple[str, ...], atol: float | None, rtol: float | None, tol: tuple[str, ...], latency_runs: int,
           json_path: Path | None, junit_path: Path | None, markdown_path: Path | None, quiet: bool, debug: bool,
           **kw: Any) -> None:
    """Verify DIR (a convert output), or convert MODEL --to FORMAT and verify it."""
    from bridge.verify.run import find_output_dir
    from bridge.verify.run import verify as run_verify

    progress = _Progress(quiet)
    with _user_errors(debug):
        tolerances = _parse_tol(tol)
        if target is None:
            subject: Any = find_output_dir(Path.cwd())
        elif Path(target).is_dir() and (Path(target) / "manifest.json").is_file():
            subject = Path(target)
        elif to is None:
            raise InputError(f"{target}: not a bridge output directory (no manifest.json); give --to FORMAT to convert it first")
        else:
            subject = _run_convert(target, to, progress, **kw)
            _print_conversion(subject)
        save_inputs = json_path.with_name(json_path.stem + ".inputs.npz") if json_path else None
        report = run_verify(
            subject, inputs=inputs, seed=seed, samples=samples, int_high=int_high,
            devices=devices or ("cpu", "cuda"), atol=atol, rtol=rtol, tol=tolerances, latency_runs=latency_runs,
            timeout=kw["timeout"], save_inputs=save_inputs, trust_pickle=kw["trust_pickle"],
            trust_code=kw["trust_code"], progress=progress.message,
        )
        _write_reports(report, json_path, junit_path, markdown_path)
        _print_report(report, quiet)
        if report.exit_code:
            click.echo(f"bridge: {'error' if report.errors else 'drift'}: " + report.summary().replace("\n", "\nbridge: "), err=True)
        sys.exit(report.exit_code)


def _write_reports(report: Any, json_path: Path | None, junit_path: Path | None, markdown_path: Path | None) -> None:
    from bridge.manifest import atomic_write_text

    for path, text in ((json_path, report.dumps), (junit_path, report.to_junit), (markdown_path, report.to_markdown)):
        if path is None:
            continue
        if not path.parent.is_dir():
            raise InputError(f"{path}: its directory does not exist; create it or choose another path")
        atomic_write_text(path, text())


def _print_report(report: Any, quiet: bool) -> None:
    from bridge.verify.report import table_rows

    rows = table_rows(report)
    headers = ["representation", "device", "vs parent", "vs source", "result", "p50 ms", "p90 ms"]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"bridge verify: {'passed' if report.passed else 'FAILED'}")
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not quiet:
        click.echo(f"inputs: {report.inputs.path} (sha256 {report.inputs.sha256[:12]}, {report.inputs.samples} samples)")


@main.command()
@_debug_option
def formats(debug: bool) -> None:
    """List formats and hops, and which are usable in this install."""
    from bridge.formats import Format
    from bridge.registry import DEFAULT_REGISTRY

    click.echo("formats:")
    for fmt in Format:
        click.echo(f"  {fmt.value:<7} {fmt.description}")
    click.echo("hops:")
    for hop in DEFAULT_REGISTRY:
        missing = hop.missing()
        state = "ok" if not missing else f"missing {', '.join(missing)}: pip install 'bridge[{hop.extra}]'"
        click.echo(f"  {hop.name:<14} {hop.tool:<24} {state}")


@main.group()
def zoo() -> None:
    """Reference models to try bridge on."""


@zoo.command("list")
def zoo_list() -> None:
    """One model a line: name, source format, description."""
    from zoo import MODELS

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
        from zoo.export import export

        if not out_dir.exists():
            out_dir.mkdir(parents=True)
        result = export(name, out_dir, force=force)
        click.echo(f"model: {result.model_path}")
        click.echo(f"example inputs: {result.inputs_path}")

