"""`bridge.explain`: where a conversion's hops diverge, named in the source's terms.

A verify on the CPU with one latency run, then each failing hop (or the one named) localised on
its worst sample (bridge.localization.run). Its inputs and logs are kept in ``DIR/explain/``, so an
explain never replaces what a verify wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.localization.result import AGREES, Localization
from bridge.options import LocalizeOptions, VerifyOptions
from bridge.progress import ProgressEvent
from bridge.verification.report import Report, ReportPaths

AREA = "explain"


def explain_report(target: Any = None, options: VerifyOptions | None = None, *, reports: ReportPaths | None = None,
                   progress: Callable[[ProgressEvent], None] | None = None) -> Report:
    """The verify report of `target` on the CPU with its ``localization`` section (`options.localize` says how)."""
    from bridge.verification.run import output_dir_for, run_verify

    options = options or VerifyOptions()
    options = replace(options, devices=("cpu",), latency_runs=1, warmup=0,
                      localize=options.localize or LocalizeOptions())
    out_dir = Path(target.out_dir) if hasattr(target, "out_dir") else output_dir_for(target)
    assert out_dir is not None
    return run_verify(out_dir, options, reports=reports, progress=progress,
                      named=options.factory or getattr(target, "factory", None), area=AREA)


def explain(target: Any = None, hop: str | None = None, output: str | None = None, options: VerifyOptions | None = None,
            *, sample: int | None = None, top: int | None = None, max_steps: int | None = None, bisect: bool | None = None,
            progress: Callable[[ProgressEvent], None] | None = None, **verify_options: Any) -> Localization:
    """Where `target` (a Conversion or its folder) first diverges: the first divergent operation of the first hop
    that drifts (or of `hop`, ``PARENT->CHILD``), following `output` or every output.

    `options` and `verify_options` are verify's (inputs, seed, samples, atol, rtol, trust flags...). A hop
    that agrees gives a record whose status is ``agrees``; ``report.localization`` of `explain_report`
    holds every hop's.
    """
    base = options.localize if options is not None and options.localize is not None else LocalizeOptions()
    changes: dict[str, Any] = {k: v for k, v in dict(hop=hop, output=output, sample=sample, top=top, max_steps=max_steps,
                                     bisect=bisect).items() if v is not None}
    localize = replace(base, **changes)
    built = VerifyOptions.build(options, **verify_options)
    report = explain_report(target, replace(built, localize=localize), progress=progress)
    found = report.localization
    diverging = next((f for f in found if f.status != AGREES), None)
    if diverging is not None:
        return diverging
    if found:
        return found[0]
    tolerance = report.hops[0].outputs[0].tolerance if report.hops and report.hops[0].outputs else None
    return Localization(hop=hop or "every hop", formats="", candidate="", status=AGREES, method="", sample=sample or 0,
                        output=output, first=None, top=(), outputs=(), compared=0, nodes=0,
                        atol=tolerance.atol if tolerance else 0.0, rtol=tolerance.rtol if tolerance else 0.0, seconds=0.0,
                        reason=report.summary() if not report.passed else "")
