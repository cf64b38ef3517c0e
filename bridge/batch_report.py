"""A batch as reports: JSON, JUnit XML (a test case per job and per hop) and Markdown, and the terminal table.

`run_batch` writes ``OUT/report.json``, ``OUT/report.xml`` and ``OUT/report.md`` atomically when the
plan ends; ``bridge batch --json/--junit/--markdown PATH|-`` writes them elsewhere too.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.staging import atomic_write_text

if TYPE_CHECKING:
    from bridge.batch import BatchReport, JobResult

KINDS = ("json", "junit", "markdown")
FILES = {"json": "report.json", "junit": "report.xml", "markdown": "report.md"}


def render(report: BatchReport, kind: str) -> str:
    if kind == "json":
        return json.dumps(report.to_json(), indent=2) + "\n"
    if kind == "junit":
        return _junit(report)
    if kind == "markdown":
        return _markdown(report)
    raise ValueError(f"unknown report kind {kind!r}: use one of {', '.join(KINDS)}")


def write_all(report: BatchReport, out_root: Path) -> None:
    for kind, name in FILES.items():
        atomic_write_text(out_root / name, render(report, kind))


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def _hops_text(result: JobResult) -> str:
    return ", ".join(f"{h.src}->{h.dst} {h.device} {_figure(h.max_abs)}{'' if h.passed else ' FAIL'}"
                     for h in result.hops if h.src != "source" or h.dst != "source")


def table(report: BatchReport) -> list[str]:
    """The terminal table: a line per job, then a line per hop under it."""
    width = max([len(r.name) for r in report.results] + [5])
    lines = [f"{'model':<{width}}  {'result':<8}  {'seconds':>7}  targets / hops"]
    for result in report.results:
        reused = " (skipped: done before)" if result.reused else ""
        lines.append(f"{result.name:<{width}}  {result.status:<8}  {result.seconds:>7.1f}  "
                     f"{','.join(result.targets)}{reused}")
        for hop in result.hops:
            mark = "ok" if hop.passed else "FAIL"
            lines.append(f"{'':<{width}}    {hop.src} -> {hop.dst} ({hop.device}): max abs {_figure(hop.max_abs)} {mark}")
        if result.message:
            lines.append(f"{'':<{width}}    {result.message}")
    counts = report.counts()
    lines.append(f"{len(report.results)} jobs: {counts['verified']} verified, {counts['drift']} drift, "
                 f"{counts['error']} error; {report.seconds:.0f} s on {report.executor}; reports in {report.out_dir}")
    return lines


def _junit(report: BatchReport) -> str:
    suites = ET.Element("testsuites", name="bridge batch")
    for result in report.results:
        suite = ET.SubElement(suites, "testsuite", name=result.name, time=f"{result.seconds:.2f}")
        job = ET.SubElement(suite, "testcase", classname=f"bridge.batch.{result.name}", name="job",
                            time=f"{result.seconds:.2f}")
        if result.status == "error":
            ET.SubElement(job, "error", message=result.message).text = result.message
        elif result.status == "drift":
            ET.SubElement(job, "failure", message=result.message).text = result.message
        for hop in result.hops:
            case = ET.SubElement(suite, "testcase", classname=f"bridge.batch.{result.name}",
                                 name=f"{hop.src} -> {hop.dst} ({hop.device})")
            if not hop.passed:
                message = f"max abs {_figure(hop.max_abs)} over tolerance"
                ET.SubElement(case, "failure", message=message).text = message
        suite.set("tests", str(len(suite)))
        suite.set("failures", str(len(suite.findall("testcase/failure"))))
        suite.set("errors", str(len(suite.findall("testcase/error"))))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _markdown(report: BatchReport) -> str:
    counts = report.counts()
    status = "every job verified" if report.passed else "failures"
    lines = [f"### bridge batch: {status}", "",
             f"{len(report.results)} jobs on {report.executor}: {counts['verified']} verified, {counts['drift']} drift, "
             f"{counts['error']} error, in {report.seconds:.0f} s.", "",
             "| model | targets | result | seconds | hops (max abs vs parent, cumulative) | note |", "|---|---|---|---|---|---|"]
    for r in report.results:
        note = (r.message or ("done before with the same inputs" if r.reused else "")).replace("|", "/")
        lines.append(f"| {r.name} | {', '.join(r.targets)} | {r.status} | {r.seconds:.1f} | {_hops_text(r)} | {note} |")
    return "\n".join(lines) + "\n"
