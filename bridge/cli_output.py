"""What the CLI shows: progress lines, the log's handler, and the summaries of a conversion and a report.

Human output goes to stdout unless a report is written to stdout (``--json -``), when it goes to
stderr so that stdout holds the report alone. Progress and log lines always go to stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from bridge.progress import FALLBACK, RUNNING, START, ProgressEvent

if TYPE_CHECKING:
    from bridge.conversion import Conversion
    from bridge.verification.report import Report


def setup_logging(verbose: int, quiet: bool) -> None:
    """``-q``: errors only; default: warnings; ``-v``: each step (INFO); ``-vv``: detail (DEBUG)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger("bridge")
    logger.setLevel(level)
    if not any(getattr(h, "_bridge_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("bridge: %(levelname)s: %(message)s"))
        handler._bridge_cli = True  # type: ignore[attr-defined]  # marks the CLI's own handler
        logger.addHandler(handler)
    logger.propagate = False


class Progress:
    """One live line per step on a terminal (rich), a line per finished step otherwise, nothing with -q.

    With ``-v`` the log says the same: the lines are left to it.
    """

    def __init__(self, quiet: bool, verbose: int = 0) -> None:
        self.quiet = quiet or verbose > 0
        self.tty = sys.stderr.isatty()
        self._status: Any = None
        if self.tty and not self.quiet:
            from rich.console import Console

            self.console = Console(stderr=True)

    def __call__(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.kind == FALLBACK:
            self._stop()
            click.echo(f"  {event.step}: {event.message}", err=True)
            return
        if event.kind == RUNNING:  # a long hop is alive: the live line says for how long and how much memory
            if self.tty and self._status is not None:
                self._status.update(f"[bold]{event.step}[/bold] ... {event.seconds:.0f} s, {event.message}")
            elif not self.tty:
                click.echo(event.describe(), err=True)
            return
        if self.tty:
            if event.kind == START:
                self._stop()
                self._status = self.console.status(f"[bold]{event.step}[/bold] ...")
                self._status.start()
                return
            self._stop()
            mark = "[green]done[/green]" if event.kind == "done" else "[red]FAILED[/red]"
            self.console.print(f"  {event.step:<28} {mark} {event.seconds:6.1f} s {event.message}")
        elif event.kind != START:
            click.echo(event.describe(), err=True)

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        self._stop()


def print_conversion(conversion: Conversion, *, to_stderr: bool = False) -> None:
    """The route, a line per candidate passed over and per failure, each artifact with its check, the manifest."""
    out = sys.stderr if to_stderr else sys.stdout
    click.echo(f"route: {'; '.join(conversion.manifest.route)}", file=out)
    if conversion.cached:
        click.echo(f"from the conversion cache (key {(conversion.cache_key or '')[:12]}): made and checked by an earlier "
                   "run with the same source bytes, options and tool versions; --no-cache converts again", file=out)
    for artifact in conversion.artifacts:
        passed_over = [a for a in artifact.attempts if a.candidate != artifact.candidate and a.outcome != "not applicable"]
        if passed_over and artifact.precision == "float32":
            tried = "; ".join(f"{a.candidate} {a.outcome}: {a.message}" for a in passed_over)
            worst = artifact.check.worst() if artifact.check is not None else None
            figure = f", max abs {worst.max_abs:.2g}" if worst is not None and worst.max_abs is not None else ""
            click.echo(f"{artifact.hop.replace('->', ' -> ')}: {tried}; kept {artifact.candidate}{figure}", err=True)
    for failure in conversion.failures:
        resolved = f"; made instead by the longer route {failure.resolved_by}" if failure.resolved_by else ""
        log = f" (log: {conversion.out_dir / failure.log})" if failure.log else ""
        click.echo(f"{failure.hop.replace('->', ' -> ')}: {failure.error}{resolved}{log}", err=True)
    for artifact in conversion.artifacts:
        if artifact.check is None:
            state = "not checked"
        else:
            worst = artifact.check.worst()
            figure = f", max abs {worst.max_abs:.2g}" if worst is not None and worst.max_abs is not None else ""
            state = f"{'verified' if artifact.check.passed else 'DID NOT VERIFY'} ({artifact.candidate}{figure})"
        click.echo(f"  {artifact.key:<15} {conversion.out_dir / artifact.path}  {state}", file=out)
    click.echo(f"manifest: {conversion.manifest_path}", file=out)


def print_report(report: Report, quiet: bool, *, to_stderr: bool = False) -> None:
    """The table of representations (rich on a terminal), the inputs used and the report's notes."""
    from bridge.verification.report import QUANTIZED_HEADERS, TABLE_HEADERS, quantized_rows, table_rows

    out = sys.stderr if to_stderr else sys.stdout
    rows = table_rows(report)
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"bridge verify: {'passed' if report.passed else 'FAILED'}")
        for header in TABLE_HEADERS:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console(file=out).print(table)
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(TABLE_HEADERS)]
        for row in [list(TABLE_HEADERS), *rows]:
            click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    quantized = quantized_rows(report)
    if quantized:
        click.echo("quantized against the float parent (size and p50 as a share of the float artifact of the same format):", file=out)
        widths = [max(len(h), *(len(r[i]) for r in quantized)) for i, h in enumerate(QUANTIZED_HEADERS)]
        for row in [list(QUANTIZED_HEADERS), *quantized]:
            click.echo("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out)
    for found in report.quantization_layers:
        for line in found.lines():
            click.echo(line, file=out)
    if not quiet:
        click.echo(f"inputs: {report.inputs.path} (sha256 {report.inputs.sha256[:12]}, {report.inputs.samples} samples)",
                   file=out)
        for note in report.notes:
            click.echo(f"note: {note}", file=out)


def print_localization(report: Report, *, to_stderr: bool = False, everything: bool = False) -> None:
    """Each hop's localisation; with `everything` (explain), a line when no hop diverges."""
    out = sys.stderr if to_stderr else sys.stdout
    for found in report.localization:
        for line in found.lines() if found.diverges else [found.summary()]:
            click.echo(line, file=out)
    if everything and not report.localization and not report.errors:
        compared = len(report.hops)
        click.echo(f"nothing diverges: every hop ({compared}) within tolerance on {report.inputs.samples} samples", file=out)


def explain_exit_code(report: Report, *, named: bool = False) -> int:
    """0 nothing diverges; 1 a hop diverges (localised or not); 2 a representation could not run or nothing compared.

    With a hop `named`, only that hop counts; otherwise drift that no hop explains (the cumulative
    drift of hops each within tolerance) is drift too.
    """
    from bridge.errors import EXIT_DRIFT, EXIT_OK, EXIT_USER_ERROR

    if report.errors or report.compared_nothing:
        return EXIT_USER_ERROR
    if any(found.diverges for found in report.localization) or (not named and report.drift_failures):
        return EXIT_DRIFT
    return EXIT_OK
