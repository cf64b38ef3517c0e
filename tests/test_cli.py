"""The CLI's exit codes and the rule that --help and formats import no framework."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

FRAMEWORKS = ("torch", "tensorflow", "onnx", "onnxruntime", "onnx2tf", "tf2onnx", "keras", "onnx2torch")


def bridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_import_cli_leaves_frameworks_out() -> None:
    code = f"import sys, bridge.cli, bridge.registry, bridge.route; print([m for m in {FRAMEWORKS!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_and_formats_import_no_framework_and_are_fast() -> None:
    probe = (
        "import sys, runpy; sys.argv=['bridge', %r]\n"
        "try:\n    runpy.run_module('bridge', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print('LOADED', [m for m in %r if m in sys.modules])"
    )
    for command in ("--help", "formats"):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", probe % (command, FRAMEWORKS)], capture_output=True, text=True, check=True).stdout
        elapsed = time.perf_counter() - started
        assert "LOADED []" in out, out
        assert elapsed < 2.0  # generous for a loaded CI box; bench/ measures the real figure


def test_formats_lists_every_hop_and_runtime_as_usable() -> None:
    from bridge.registry import DEFAULT_REGISTRY
    from bridge.runtimes.registry import DEFAULT_RUNNERS

    result = bridge("formats")
    assert result.returncode == 0
    lines = [line.split() for line in result.stdout.splitlines()]
    for hop in DEFAULT_REGISTRY:
        assert any(words[0] == hop.name and words[-1] == "ok" for words in lines), hop.name
    import shutil

    # tensorflow_model_server is not pip-installable and not on this machine: its row says what to install.
    absent = set() if shutil.which("tensorflow_model_server") else {("tf-serving", "tf-serving-rest")}
    for runner in DEFAULT_RUNNERS:
        if (runner.format.value, runner.runtime) in absent:
            assert any(words[:3] == [runner.format.value, runner.runtime, "cpu"] and words[3] == "missing" and
                       "Debian package" in " ".join(words) for words in lines), runner
            continue
        assert any(words[:2] == [runner.format.value, runner.runtime] and words[-1] == "ok" for words in lines), runner
    from bridge.sources import DEFAULT_RESOLVERS

    for resolver in DEFAULT_RESOLVERS:  # every kind of source, with what it needs installed
        assert any(words[:2] == [resolver.kind.value, "ok"] for words in lines), resolver.kind
    assert "Hugging Face save_pretrained folder" in result.stdout


def test_missing_model_exits_2_with_one_line(tmp_path: Path) -> None:
    result = bridge("convert", str(tmp_path / "nope.pt2"), "--to", "onnx")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope.pt2" in result.stderr and "Traceback" not in result.stderr


def test_unknown_format_exits_2(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = bridge("convert", str(model), "--to", "coreml")
    assert result.returncode == 2
    assert "unknown format 'coreml'" in result.stderr


def test_route_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = bridge("convert", str(model), "--to", "jax")  # nothing converts to JAX
    assert result.returncode == 2
    assert "no route from onnx to jax" in result.stderr
    assert not (tmp_path / "m.bridge").exists()


def test_verify_without_manifest_or_to_exits_2(tmp_path: Path) -> None:
    result = bridge("verify", cwd=tmp_path)
    assert result.returncode == 2
    assert "no bridge output directory here" in result.stderr


def test_python_dash_m_and_version() -> None:
    result = bridge("--version")
    assert result.returncode == 0 and "bridge" in result.stdout


@pytest.mark.slow
def test_convert_json_prints_the_manifest_it_wrote(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "mlp.bridge"
    result = bridge("convert", str(zoo_model("mlp")), "--to", "onnx", "-o", str(out), "--json", "-")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert printed == json.loads((out / "manifest.json").read_text())
    assert printed["schema"] == "bridge.manifest/2"
    assert [a["format"] for a in printed["artifacts"]] == ["onnx"]
    assert result.stderr.startswith("route: torch -> onnx")  # the human summary moved to stderr, no progress lines
    assert "done in" not in result.stderr


def test_cli_reference_is_generated_from_the_commands() -> None:
    root = Path(__file__).resolve().parents[1]
    generated = subprocess.run([sys.executable, str(root / "docs" / "gen_cli.py")], capture_output=True, text=True, check=True)
    assert generated.stdout == (root / "docs" / "cli.md").read_text(), "regenerate: python docs/gen_cli.py > docs/cli.md"


def test_report_renders_a_saved_report_as_html_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    from tests.unit.test_report import _report

    saved = tmp_path / "report.json"
    _report(drift=0.5).write(saved, "json")
    page = tmp_path / "report.html"
    result = bridge("report", str(saved), "--html", str(page))
    assert result.returncode == 0, result.stderr
    assert ">FAILED<" in page.read_text() and "<svg" in page.read_text()
    nothing = bridge("report", str(saved))
    assert nothing.returncode == 2 and "say what to write: --html PATH" in nothing.stderr
    (tmp_path / "other.json").write_text('{"passed": true}')
    other = bridge("report", str(tmp_path / "other.json"), "--html", str(tmp_path / "o.html"))
    assert other.returncode == 2 and "other.json" in other.stderr and not (tmp_path / "o.html").exists()
