"""The verification report: typed records, and their JSON, JUnit, Markdown and terminal forms.

The JSON schema is versioned (``bridge.report/1``) and documented in docs/schemas.md;
`report_schema.json` beside this module is the machine-checkable form.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import records
from bridge.defaults import Tolerance
from bridge.errors import EXIT_DRIFT, EXIT_OK, EXIT_USER_ERROR, InputError, OutputError
from bridge.localization.quantized import LayerErrors
from bridge.localization.result import Localization
from bridge.staging import atomic_write_text
from bridge.verification.compare import OutputDrift
from bridge.verification.timing import LatencyStats

REPORT_SCHEMA = "bridge.report/1"
SCHEMA_FILE = Path(__file__).with_name("report_schema.json")
MAX_REPORT_BYTES = 256 * 1024 * 1024

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
    provider: str = ""
    """What actually ran it, as the runtime reports: onnxruntime's execution provider, a TF device."""
    digest: str = ""
    """Its file against the manifest's sha256: ``matches``, ``changed ...; allowed``, or empty (not a file)."""
    log: str | None = None
    """The runtime's whole output for this run (a file under ``DIR/verify/logs``)."""
    model_latency: LatencyStats | None = None
    """The model alone, measured inside a server, where `latency` is the client's end-to-end figure."""
    bytes: int | None = None
    """The artifact's size on disk (a folder's files together); None for the eager module."""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.device}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "format": self.format, "device": self.device, "runtime": self.runtime,
            "provider": self.provider, "digest": self.digest, "log": self.log, "path": self.path, "status": self.status,
            "latency_ms": self.latency.to_json() if self.latency else None,
            "model_latency_ms": self.model_latency.to_json() if self.model_latency else None, "bytes": self.bytes,
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
class ReportPaths:
    """Where to write a report: each of JSON, JUnit XML, Markdown and HTML, or None. ``-`` means stdout."""

    json: Path | None = None
    junit: Path | None = None
    markdown: Path | None = None
    html: Path | None = None

    def check(self) -> None:
        """Refuse paths that cannot be written, before any work is done."""
        for path in (self.json, self.junit, self.markdown, self.html):
            if path is not None and str(path) != "-" and not path.absolute().parent.is_dir():
                raise OutputError(f"{path}: its directory does not exist; create it or choose another path")


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
    uncompared: tuple[str, ...] = ()
    """Artifacts that were compared on no device (every run unavailable): a failure unless `allow_unavailable`."""
    allow_unavailable: bool = False
    localization: tuple[Localization, ...] = ()
    """Where each failing hop diverges (``verify --localize``, ``bridge explain``)."""
    quantization_layers: tuple[LayerErrors, ...] = ()
    """Each quantized artifact's operations that lose the most against its float parent (bridge.localization.quantized)."""

    @property
    def errors(self) -> tuple[Representation, ...]:
        return tuple(r for r in self.representations if r.status == ERROR)

    @property
    def compared_nothing(self) -> bool:
        """No comparison was made at all, or some artifact was never compared, and that was not allowed."""
        return not self.allow_unavailable and (not self.comparisons or bool(self.uncompared))

    @property
    def comparisons(self) -> tuple[Comparison, ...]:
        return (*self.hops, *self.cumulative, *self.devices)

    @property
    def drift_failures(self) -> tuple[Comparison, ...]:
        return tuple(c for c in self.comparisons if not c.passed)

    @property
    def passed(self) -> bool:
        return not self.errors and not self.drift_failures and not self.compared_nothing

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        """0 all within tolerance; 2 a representation could not run or nothing was compared; 1 drift over tolerance."""
        if self.errors or self.compared_nothing:
            return EXIT_USER_ERROR
        return EXIT_DRIFT if self.drift_failures else EXIT_OK

    def summary(self) -> str:
        """One line per problem; ``verified: N comparisons within tolerance`` when none."""
        lines = [f"{r.label} could not run: {r.error}" + (f" (log: {r.log})" if r.log else "") for r in self.errors]
        if self.compared_nothing and self.errors:  # not an absent device: the representations above failed
            lines.append("nothing was compared: the representations above could not run")
        elif self.compared_nothing:
            unavailable = "; ".join(f"{r.label}: {r.error}" for r in self.representations if r.status == UNAVAILABLE)
            what = (f"{', '.join(self.uncompared)} compared on no device" if self.uncompared and self.comparisons
                    else "nothing was compared")
            lines.append(f"{what} ({unavailable or 'no representation ran'}); choose a device that is here, "
                         "or pass --allow-unavailable to accept it")
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
            "uncompared": list(self.uncompared),
            "allow_unavailable": self.allow_unavailable,
            "notes": list(self.notes),
            "localization": [records.to_json(found) for found in self.localization],
            "quantization_layers": [records.to_json(found) for found in self.quantization_layers],
        }

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else f"failed (exit {self.exit_code})"
        return (f"Report({verdict}, {len(self.representations)} representations, "
                f"{len(self.comparisons)} comparisons, manifest={self.manifest!r})")

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test case per hop and device (plus cumulative and CPU-vs-CUDA checks)."""
        suite = ET.Element("testsuite", name="bridge verify")
        for comparison in self.comparisons:
            case = ET.SubElement(suite, "testcase", classname="bridge.verify",
                                 name=f"{comparison.kind}: {comparison.title()}")
            if not comparison.passed:
                message = "; ".join(o.describe() for o in comparison.failing) or "no outputs"
                ET.SubElement(case, "failure", message=message).text = message
        for rep in self.representations:
            case = ET.SubElement(suite, "testcase", classname="bridge.verify", name=f"run: {rep.label}")
            if rep.status == ERROR:
                ET.SubElement(case, "error", message=rep.error or "").text = rep.error or ""
            elif rep.status == UNAVAILABLE:
                ET.SubElement(case, "skipped", message=rep.error or "not available")
        suite.set("tests", str(len(suite)))
        suite.set("failures", str(sum(1 for c in self.comparisons if not c.passed)))
        suite.set("errors", str(len(self.errors)))
        suite.set("skipped", str(sum(1 for r in self.representations if r.status == UNAVAILABLE)))
        ET.indent(suite)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"

    def render(self, kind: str) -> str:
        """The report as ``json``, ``junit``, ``markdown`` or ``html`` text."""
        renderers = {"json": self.dumps, "junit": self.to_junit, "markdown": self.to_markdown, "html": self.to_html}
        if kind not in renderers:
            raise ValueError(f"unknown report kind {kind!r}: use one of {', '.join(renderers)}")
        return renderers[kind]()

    def write(self, path: Path, kind: str = "json") -> None:
        """Write the report as `kind` to `path` atomically (``-``: standard output)."""
        text = self.render(kind)
        if str(path) == "-":
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        ReportPaths(json=path).check()
        atomic_write_text(path, text)

    @classmethod
    def read(cls, path: Path) -> Report:
        """Read a JSON report written by `write` as untrusted input: an InputError names the field that is wrong."""
        try:
            if path.stat().st_size > MAX_REPORT_BYTES:
                raise InputError(f"{path}: larger than any report bridge writes; not a bridge report")
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{path}: cannot read it ({exc.strerror}); give the JSON file `bridge verify --json` wrote") from exc
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InputError(f"{path}: not valid JSON ({str(exc)[:200] or type(exc).__name__}); write the report again") from exc
        try:
            records.validate(data, SCHEMA_FILE)
        except records.RecordError as exc:
            raise InputError(f"{path}: {exc} (report schema {REPORT_SCHEMA})") from exc
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The report from JSON that already matched the schema (`read` checks it first)."""
        def drift(o: dict[str, Any]) -> OutputDrift:
            def num(key: str) -> float:
                value = o.get(key)
                return float("nan") if value is None else float(value)

            t = o["tolerance"]
            return OutputDrift(o["name"], num("max_abs"), num("mean_abs"), num("max_rel"), num("rmse"), num("cosine"),
                               o.get("top1_agreement"), o.get("top5_overlap"), o.get("nonfinite"), o["passed"],
                               Tolerance(float(t["atol"]), float(t["rtol"]), str(t["source"]), t.get("min_sqnr_db"),
                                         t.get("min_top1")), o.get("error"), o.get("sqnr_db"), o.get("max_abs_scales"),
                               tuple(int(c) for c in o.get("histogram", ())))

        def comparisons(kind: str) -> tuple[Comparison, ...]:
            return tuple(Comparison(kind, c["src"], c["dst"], c["device"], tuple(drift(o) for o in c["outputs"]))
                         for c in data[kind if kind != "device" else "devices"])

        def representation(r: dict[str, Any]) -> Representation:
            def stats(latency: dict[str, Any] | None) -> LatencyStats | None:
                return LatencyStats(**{k: latency[k] for k in ("p50", "p90", "p99", "mean", "n", "batch")}) if latency else None

            return Representation(r["name"], r["format"], r["device"], r["runtime"], r["path"], r["status"],
                                  stats(r.get("latency_ms")), r.get("error"), tuple(r.get("notes", ())),
                                  r.get("provider", ""), r.get("digest", ""), r.get("log"), stats(r.get("model_latency_ms")),
                                  r.get("bytes"))

        i = data["inputs"]
        return cls(
            manifest=data["manifest"], inputs=InputsRecord(i["seed"], i["samples"], i["sha256"], i["path"], i["generated"]),
            representations=tuple(representation(r) for r in data["representations"]),
            hops=comparisons("hops"), cumulative=comparisons("cumulative"), devices=comparisons("device"),
            bridge_version=data["bridge_version"], notes=tuple(data.get("notes", ())),
            uncompared=tuple(data.get("uncompared", ())), allow_unavailable=bool(data.get("allow_unavailable", False)),
            localization=tuple(records.from_json(Localization, found, f"localization[{k}]")
                               for k, found in enumerate(data.get("localization", ()))),
            quantization_layers=tuple(records.from_json(LayerErrors, found, f"quantization_layers[{k}]")
                                      for k, found in enumerate(data.get("quantization_layers", ()))),
        )

    def write_all(self, paths: ReportPaths) -> None:
        """Write every report `paths` names."""
        paths.check()
        for kind in ("json", "junit", "markdown", "html"):
            path = getattr(paths, kind)
            if path is not None:
                self.write(path, kind)

    def to_html(self) -> str:
        """One self-contained page with the tables and inline SVG charts (bridge.verification.html); the candidates
        and tool versions too when the manifest it names can be read."""
        from bridge.errors import BridgeError
        from bridge.manifest import Manifest
        from bridge.verification import html

        manifest = None
        try:
            manifest = Manifest.read(Path(self.manifest).parent)
        except (BridgeError, OSError, ValueError):
            pass  # a report moved away from its folder renders without them
        return html.render(self, manifest)

    def to_markdown(self) -> str:
        """A summary for a pull-request comment."""
        status = "passed" if self.passed else ("errors" if self.errors else "drift over tolerance")
        lines = [f"### bridge verify: {status}", "",
                 f"Inputs: {self.inputs.samples} samples, sha256 `{self.inputs.sha256[:12]}`"
                 + (f", seed {self.inputs.seed}" if self.inputs.seed is not None else ""), "",
                 "| representation | runtime | device | vs parent (max abs) | vs source (max abs) | result | p50 ms | p90 ms |",
                 "|---|---|---|---|---|---|---|---|"]
        for row in table_rows(self):
            lines.append("| " + " | ".join(row) + " |")
        quantized = quantized_rows(self)
        if quantized:
            lines += ["", "Quantized artifacts against their float parent; size and p50 as a share of the float artifact "
                      "of the same format:", "",
                      "| " + " | ".join(QUANTIZED_HEADERS) + " |", "|" + "---|" * len(QUANTIZED_HEADERS)]
            lines += ["| " + " | ".join(row) + " |" for row in quantized]
        if self.quantization_layers:
            lines += ["", "**Operations that lose the most to quantization** (graph order)", ""]
            lines += [found.to_markdown() for found in self.quantization_layers]
        if not self.passed:
            lines += ["", "**Problems**", ""] + [f"- {line}" for line in self.summary().splitlines()]
        if self.localization:
            lines += ["", "**Where it diverges**", ""] + [found.to_markdown() for found in self.localization]
        return "\n".join(lines) + "\n"


def _worst(comparison: Comparison | None) -> str:
    if comparison is None:
        return "-"
    values = [o.max_abs for o in comparison.outputs if o.error is None]
    if any(o.error for o in comparison.outputs) or not values:
        return "error"
    return f"{max(values):.2e}"


TABLE_HEADERS = ("representation", "runtime", "device", "vs parent", "vs source", "result", "p50 ms", "p90 ms")
QUANTIZED_HEADERS = ("quantized", "against", "device", "SQNR dB", "cosine", "top-1", "top-5", "max abs (scales)",
                     "size vs float", "p50 vs float", "result", "tolerance")


def precision_of(rep: Representation) -> str:
    """An artifact's precision, from its key (``tflite-int8``: the format, then the precision when not float32)."""
    return rep.name[len(rep.format) + 1:] if rep.name.startswith(rep.format + "-") else "float32"


def quantized_rows(report: Report) -> list[list[str]]:
    """One row per quantized artifact and device, against its float parent: the quantization figures (worst
    output), its size and median latency as a share of the parent's, and which tolerance applied."""
    reps = {(r.name, r.device): r for r in report.representations}
    rows = []
    for hop in report.hops:
        mine = reps.get((hop.dst, hop.device))
        if not hop.outputs or mine is None or precision_of(mine) == "float32":
            continue
        # Size and speed against the float artifact of the same format where there is one (tflite-int8 against tflite).
        parent = reps.get((mine.format, hop.device)) if mine is not None else None
        parent = parent or reps.get((hop.src, hop.device))

        def worst(values: list[float | None], largest: bool = False) -> str:
            found = [v for v in values if v is not None and v == v]
            return (f"{max(found):.3g}" if largest else f"{min(found):.3f}") if found else "-"

        sqnr = [o.sqnr_db for o in hop.outputs if o.sqnr_db is not None]
        size = f"{mine.bytes / parent.bytes:.2f}x" if mine and parent and mine.bytes and parent.bytes else "-"
        speed = f"{mine.latency.p50 / parent.latency.p50:.2f}x" if mine and parent and mine.latency and parent.latency \
            and parent.latency.p50 > 0 else "-"
        rows.append([hop.dst, hop.src, hop.device, f"{min(sqnr):.1f}" if sqnr else "-",
                     worst([o.cosine for o in hop.outputs]), worst([o.top1_agreement for o in hop.outputs]),
                     worst([o.top5_overlap for o in hop.outputs]),
                     worst([o.max_abs_scales for o in hop.outputs], largest=True), size, speed, "pass" if hop.passed else "FAIL",
                     hop.outputs[0].tolerance.source])
    return rows


def table_rows(report: Report) -> list[list[str]]:
    """One row per representation and device: drift against parent and source, result, latency."""
    hops = {(c.dst, c.device): c for c in report.hops}
    cumulative = {(c.dst, c.device): c for c in report.cumulative}
    devices = {(c.src, c.device): c for c in report.devices}
    rows = []
    for rep in report.representations:
        if rep.status != OK:
            result = "n/a" if rep.status == UNAVAILABLE else "ERROR"
            rows.append([rep.name, rep.runtime, rep.device, "-", "-", f"{result}: {rep.error}", "-", "-"])
            continue
        hop = hops.get((rep.name, rep.device))
        cum = cumulative.get((rep.name, rep.device))
        dev = devices.get((rep.name, rep.device))
        checks = [c for c in (hop, cum, dev) if c is not None]
        result = "reference" if not checks else ("pass" if all(c.passed for c in checks) else "FAIL")
        parent = _worst(hop) if hop else (f"cpu: {_worst(dev)}" if dev else "-")
        latency = rep.latency
        rows.append([rep.name, rep.runtime, rep.device, parent, _worst(cum), result,
                     f"{latency.p50:.3f}" if latency else "-", f"{latency.p90:.3f}" if latency else "-"])
    return rows
