"""The HTML report opened in a real browser: headless Chromium (Debian's package) driven by Playwright.

It must render with no console error, and show the verdict and the numbers of the JSON report it was
made from; a screenshot of each is kept in build/test-artifacts/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_bridge

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (the setup installs Debian's chromium)")]
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


def _open(page_path: Path, screenshot: Path) -> dict[str, Any]:
    """What Chromium shows of the page: verdict, exit code, the representations table, errors seen, a screenshot."""
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
            page.goto(page_path.as_uri(), wait_until="load")
            tables = page.eval_on_selector_all(
                "table", "ts => ts.map(t => Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.innerText)))")
            shown = {"verdict": page.inner_text("#verdict"), "exit_code": page.inner_text("#exit-code"), "tables": tables,
                     "svgs": page.eval_on_selector_all("svg", "s => s.filter(e => e.getBoundingClientRect().width > 0).length"),
                     "errors": errors}
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            return shown
        finally:
            browser.close()


@pytest.mark.parametrize("name", ["cnn", pytest.param("resnet18", marks=pytest.mark.heavy)])
def test_the_report_renders_in_chromium_with_the_json_reports_numbers(name: str, zoo_model: Callable[[str], Path],
                                                                       tmp_path: Path) -> None:
    report_json, report_html = tmp_path / "report.json", tmp_path / "report.html"
    result = run_bridge("verify", str(zoo_model(name)), "--to", "tflite", "-o", str(tmp_path / f"{name}.bridge"),
                        "--device", "cpu", "--latency-runs", "5", "--json", str(report_json), "--html", str(report_html))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(report_json.read_text())
    shown = _open(report_html, ARTIFACTS / f"report-{name}.png")
    assert shown["errors"] == [], shown["errors"]
    assert shown["verdict"] == ("passed" if report["passed"] else "FAILED")
    assert shown["exit_code"] == str(report["exit_code"])
    assert shown["svgs"] >= 4  # route, drift, histograms, cumulative, latency: drawn, not blank
    representations = shown["tables"][0]
    assert representations[0][:3] == ["representation", "runtime", "device"]
    rows = {(row[0], row[2]): row for row in representations[1:]}
    for rep in report["representations"]:
        row = rows[(rep["name"], rep["device"])]
        assert row[1] == rep["runtime"]
        assert row[6] == f"{rep['latency_ms']['p50']:.3f}"  # the median the JSON holds, as the page shows it
    for hop in report["hops"]:
        worst = max(o["max_abs"] for o in hop["outputs"])
        assert rows[(hop["dst"], hop["device"])][3] == f"{worst:.2e}"
    assert (ARTIFACTS / f"report-{name}.png").stat().st_size > 10_000
