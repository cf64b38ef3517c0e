"""Report rendering from hand-built records: verdict, exit code, JSON (schema), JUnit, Markdown, files."""

from __future__ import annotations

import json
import os
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from bridge.defaults import Tolerance
from bridge.errors import OutputError
from bridge.verification.compare import compare_output
from bridge.verification.report import (
    ERROR,
    OK,
    UNAVAILABLE,
    Comparison,
    InputsRecord,
    Report,
    ReportPaths,
    Representation,
    table_rows,
)
from bridge.verification.timing import LatencyStats

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "bridge" / "verification" / "report_schema.json").read_text())
TOL = Tolerance(1e-4, 1e-3)
INPUTS = InputsRecord(0, 2, "ab" * 32, "inputs.npz", True)


def _rep(name: str, status: str = OK, device: str = "cpu", error: str | None = None) -> Representation:
    latency = LatencyStats.from_ns([1_000_000, 2_000_000], 1) if status == OK else None
    return Representation(name, "onnx", device, "onnxruntime", f"{name}.onnx", status, latency, error,
                          provider="CPUExecutionProvider" if status == OK else "")


def _hop(dst: str, drift: float) -> Comparison:
    expected = np.zeros((2, 1, 3))
    return Comparison("hop", "source", dst, "cpu", (compare_output("y", expected, expected + drift, TOL),))


def _report(*, drift: float = 0.0, errors: bool = False) -> Report:
    reps = [_rep("source"), _rep("onnx"), _rep("onnx", UNAVAILABLE, "cuda", "cuda: not available (no driver)")]
    if errors:
        reps.append(_rep("tflite", ERROR, error="crashed with signal SIGSEGV"))
    hop = _hop("onnx", drift)
    return Report("m/manifest.json", INPUTS, tuple(reps), (hop,), (hop,), (), "0.1.0")


def test_verdicts_and_exit_codes() -> None:
    assert _report().passed and _report().exit_code == 0 and bool(_report())
    drifting = _report(drift=0.5)
    assert not drifting and drifting.exit_code == 1
    assert "drift over tolerance in hop source -> onnx [cpu]: y: max abs 0.5" in drifting.summary()
    broken = _report(errors=True)
    assert broken.exit_code == 2 and "tflite@cpu could not run: crashed with signal SIGSEGV" in broken.summary()
    assert _report().summary() == "verified: 2 comparisons within tolerance"


def test_json_validates_against_the_shipped_schema() -> None:
    for report in (_report(), _report(drift=0.5), _report(errors=True)):
        data = json.loads(report.dumps())
        jsonschema.validate(data, SCHEMA)
        assert data["exit_code"] == report.exit_code
    data = json.loads(_report().dumps())
    assert data["representations"][1]["provider"] == "CPUExecutionProvider"
    assert data["hops"][0]["tolerance"] == {"atol": 1e-4, "rtol": 1e-3, "source": "default"}


def test_junit_counts_and_messages() -> None:
    suite = ET.fromstring(_report(drift=0.5, errors=True).to_junit())
    assert suite.get("tests") == str(len(suite)) == "6"
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("2", "1", "1")
    failure = suite.find("testcase/failure")
    assert failure is not None and "max abs 0.5" in (failure.get("message") or "")


def test_markdown_and_table_rows() -> None:
    markdown = _report(drift=0.5).to_markdown()
    assert markdown.startswith("### bridge verify: drift over tolerance")
    assert "| onnx | onnxruntime | cpu | 5.00e-01 | 5.00e-01 | FAIL | 1.500 |" in markdown
    rows = table_rows(_report())
    assert rows[0][:6] == ["source", "onnxruntime", "cpu", "-", "-", "reference"]
    assert rows[2][5].startswith("n/a: cuda: not available")


def test_repr_is_one_short_line() -> None:
    text = repr(_report(drift=0.5))
    assert text.startswith("Report(failed (exit 1), 3 representations, 2 comparisons") and "\n" not in text


def test_write_is_atomic_with_ordinary_permissions_and_dash_is_stdout(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    report = _report()
    path = tmp_path / "r.json"
    report.write(path)
    assert json.loads(path.read_text())["passed"] is True
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left
    report.write(Path("-"), "markdown")
    assert capsys.readouterr().out.startswith("### bridge verify: passed")
    with pytest.raises(OutputError, match="its directory does not exist"):
        report.write_all(ReportPaths(junit=tmp_path / "absent" / "r.xml"))
    with pytest.raises(ValueError, match="unknown report kind"):
        report.render("pdf")


def test_html_is_one_page_that_needs_nothing_from_the_network_and_shows_the_reports_numbers(tmp_path: Path) -> None:
    import html.parser
    import re

    drifting = _report(drift=0.5, errors=True)
    page = drifting.render("html")

    class Parser(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.links: list[str] = []
            self.ids: dict[str, str] = {}
            self._open: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.tags.append(tag)
            self.links += [v or "" for k, v in attrs if k in ("src", "href")]
            self._open = dict(attrs).get("id")

        def handle_data(self, data: str) -> None:
            if self._open:
                self.ids[self._open] = data.strip()
                self._open = None

    parser = Parser()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and not parser.links  # self-contained
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}  # the SVG namespace only
    assert parser.ids == {"verdict": "FAILED", "exit-code": str(drifting.exit_code)}
    assert page.count("<svg") >= 4  # route, drift, histogram, latency
    assert ">5.00e-01<" in page and "crashed with signal SIGSEGV" in page  # the table's figures and the error
    assert "[1e-1, 1e0): 6 of 6" in page  # the histogram: the six errors of 0.5 (2 samples x 3) in that decade
    saved = tmp_path / "report.json"
    drifting.write(saved, "json")
    from bridge.verification.report import Report

    again = Report.read(saved).render("html")  # `bridge report`: a saved report renders with the same figures
    assert ">5.00e-01<" in again and ">FAILED<" in again and "[1e-1, 1e0): 6 of 6" in again
