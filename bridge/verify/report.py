"""The verification report: typed records, and their JSON, JUnit, Markdown and terminal forms.

The JSON schema is versioned (``bridge.report/1``) and documented in docs/schemas.md;
`report_schema.json` beside this module is the machine-checkable form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from bridge.errors import EXIT_DRIFT, EXIT_OK, EXIT_USER_ERROR
from bridge.verify.compare import OutputDrift
from bridge.verify.timing import LatencyStats

REPORT_SCHEMA = "bridge.report/1"

OK, UNAVAILABLE, ERROR = "ok", "unavailable", "error"


@dataclass(frozen=True)
class Representation:
    """One artifact (or the source) run on one device."""

    name: str
    format: str
    device: str
    runtime: str
    path: str
    status: str
    latency: LatencyStats | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name}@{self.device}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "format": self.format, "device": self.device, "runtime": self.runtime,
            "path": self.path, "status": self.status,
            "latency_ms": self.latency.to_json() if self.latency else None,
            "error": self.error, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Comparison:
    """The outputs of `dst` against those of `src` on `device` (a hop, cumulative, or CPU vs CUDA)."""

    kind: str
    """``hop``, ``cumulative`` or ``device``."""
    src: str
    dst: str
    device: str
    outputs: tuple[OutputDrift, ...]

    @property
    def passed(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def failing(self) -> tuple[OutputDrift, ...]:
        return tuple(o for o in self.outputs if not o.passed)

    def title(self) -> str:
        if self.kind == "device":
            return f"{self.src} cpu vs {self.device}"
        return f"{self.src} -> {self.dst} [{self.device}]"

    def to_json(self) -> dict[str, Any]:
        tolerances = {json.dumps(o.tolerance.to_json(), sort_keys=True): o.tolerance.to_json() for o in self.outputs}
        return {
            "src": self.src, "dst": self.dst, "device": self.device, "passed": self.passed,
            "tolerance": next(iter(tolerances.values())) if len(tolerances) == 1 else list(tolerances.values()),
            "outputs": [o.to_json() for o in self.outputs],
        }


@dataclass(frozen=True)
class InputsRecord:
    seed: int | None
    samples: int
    sha256: str
    path: str
    generated: bool

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "samples": self.samples, "sha256": self.sha256, "path": self.path,
                "generated": self.generated}


@dataclass(frozen=True)
class Report:
    """Everything `bridge verify` found. ``bool(report)`` and ``report.passed`` say whether it passed."""

    manifest: str
    inputs: InputsRecord
    representations: tuple[Representation, ...]
    hops: tuple[Comparison, ...]
    cumulative: tuple[Comparison, ...]
    devices: tuple[Comparison, ...] = ()
    bridge_version: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Representation, ...]:
        return tuple(r for r in self.representations if r.status == ERROR)

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        return (*self.hops, *self.cumulative, *self.devices)

    @property
    def drift_failures(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if not c.passed)

    @property
    def passed(self) -> bool:
        return not self.errors and not self.drift_failures

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        """0 all within tolerance; 2 a representation could not run; 1 drift over tolerance."""
        if self.errors:
            return EXIT_USER_ERROR
        return EXIT_DRIFT if self.drift_failures else EXIT_OK

    def summary(self) -> str:
        """One line per problem; ``verified: N comparisons within tolerance`` when none."""
        lines = [f"{r.label} could not run: {r.error}" for r in self.errors]
        for comparison in self.drift_failures:
            worst = comparison.failing[0] if comparison.failing else None
            detail = worst.describe() if worst else "no outputs to compare"
            lines.append(f"drift over tolerance in {comparison.kind} {comparison.title()}: {detail}")
        if not lines:
            lines.append(f"verified: {len(self.comparisons)} comparisons within tolerance")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "bridge_version": self.bridge_version,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "manifest": self.manifest,
            "inputs": self.inputs.to_json(),
            "representations": [r.to_json() for r in self.representations],
            "hops": [c.to_json() for c in self.hops],
            "cumulative": [c.to_json() for c in self.cumulative],
            "devices": [c.to_json() for c in self.devices],
            "notes": list(self.notes),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test case per hop and device (plus cumulative and CPU-vs-CUDA checks)."""
        cases = []
        for comparison in self.comparisons:
            name = quoteattr(f"{comparison.kind}: {comparison.title()}")
            body = ""
            if not comparison.passed:
                message = "; ".join(o.describe() for o in comparison.failing) or "no outputs"
                body = f'<failure message={quoteattr(message)}>{escape(message)}</failure>'
            cases.append(f'    <testcase classname="bridge.verify" name={name}>{body}</testcase>')
        for rep in self.representations:
            name = quoteattr(f"run: {rep.label}")
            if rep.status == ERROR:
                body = f'<error message={quoteattr(rep.error or "")}>{escape(rep.error or "")}</error>'
            elif rep.status == UNAVAILABLE:
                body = f'<skipped message={quoteattr(rep.error or "not available")}/>'
            else:
                body = ""
            cases.append(f'    <testcase classname="bridge.verify" name={name}>{body}</testcase>')
        failures = sum(1 for c in self.comparisons if not c.passed)
        skipped = sum(1 for r in self.representations if r.status == UNAVAILABLE)
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<testsuite name="bridge verify" tests="{len(cases)}" failures="{failures}" '
            f'errors="{len(self.errors)}" skipped="{skipped}">\n' + "\n".join(cases) + "\n</testsuite>\n"
        )

    def to_markdown(self) -> str:
        """A summary for a pull-request comment."""
        status = "passed" if self.passed else ("errors" if self.errors else "drift over tolerance")
        lines = [f"### bridge verify: {status}", "",
                 f"Inputs: {self.inputs.samples} samples, sha256 `{self.inputs.sha256[:12]}`"
                 + (f", seed {self.inputs.seed}" if self.inputs.seed is not None else ""), "",
                 "| representation | device | vs parent (max abs) | vs source (max abs) | result | p50 ms | p90 ms |",
                 "|---|---|---|---|---|---|---|"]
        for row in table_rows(self):
            lines.append("| " + " | ".join(row) + " |")
        if not self.passed:
            lines += ["", "**Problems**", ""] + [f"- {line}" for line in self.summary().splitlines()]
        return "\n".join(lines) + "\n"


def _worst(comparison: Comparison | None) -> str:
    if comparison is None:
        return "-"
    values = [o.max_abs for o in comparison.outputs if o.error is None]
    if any(o.error for o in comparison.outputs) or not values:
        return "error"
    return f"{max(values):.2e}"


def table_rows(report: Report) -> list[list[str]]:
    """One row per representation and device: drift against parent and source, result, latency."""
    hops = {(c.dst, c.device): c for c in report.hops}
    cumulative = {(c.dst, c.device): c for c in report.cumulative}
    devices = {(c.src, c.device): c for c in report.devices}
    rows = []
    for rep in report.representations:
        if rep.status != OK:
            result = "n/a" if rep.status == UNAVAILABLE else "ERROR"
            rows.append([rep.name, rep.device, "-", "-", f"{result}: {rep.error}", "-", "-"])
            continue
        hop = hops.get((rep.name, rep.device))
        cum = cumulative.get((rep.name, rep.device))
        dev = devices.get((rep.name, rep.device))
        checks = [c for c in (hop, cum, dev) if c is not None]
        result = "reference" if not checks else ("pass" if all(c.passed for c in checks) else "FAIL")
        parent = _worst(hop) if hop else (f"cpu: {_worst(dev)}" if dev else "-")
        latency = rep.latency
        rows.append([rep.name, rep.device, parent, _worst(cum), result,
                     f"{latency.p50:.3f}" if latency else "-", f"{latency.p90:.3f}" if latency else "-"])
    return rows
