"""The habits users bring: logs kept and named, -o/--output, reports to stdout, examples in --help,
bridge env, BRIDGE_ environment options, completion, the pytest plugin, one version string."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import run_bridge

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "bridge" / "verification" / "report_schema.json").read_text())


def test_every_command_help_shows_examples() -> None:
    for command in ([], ["convert"], ["verify"], ["formats"], ["env"], ["zoo"], ["zoo", "list"], ["zoo", "export"]):
        result = run_bridge(*command, "--help")
        assert result.returncode == 0 and "Examples:" in result.stdout, command


def test_version_names_the_stack_and_env_lists_it() -> None:
    version = run_bridge("--version")
    assert version.returncode == 0
    assert re.match(r"bridge \d+\.\d+\.\d+ \(torch \S+, onnx2tf \S+, tensorflow \S+, ai-edge-litert \S+, onnxruntime \S+; "
                    r"Python 3\.12\.\d+\)", version.stdout), version.stdout
    env = run_bridge("env", "--json", "-")
    found = json.loads(env.stdout)
    names = dict((name, v) for name, v in found["distributions"])
    assert names["torch"] and names["onnx2tf"] and names["tensorflow"] and names["numpy"]
    assert found["extras"] == {"torch": True, "jax": True, "tf": True, "serving": True, "tfjs": True, "zoo": True,
                                "mlflow": True}
    assert {h["name"] for h in found["hops"]} >= {"torch->onnx", "onnx->tflite"}
    text = run_bridge("env").stdout
    assert "stack:" in text and "extras:" in text and "devices:" in text and "cuda" in text


def test_the_version_is_written_once_in_the_source() -> None:
    from bridge import __version__

    hits = []
    for path in [*ROOT.glob("bridge/**/*.py"), ROOT / "pyproject.toml", *ROOT.glob("*.cfg")]:
        if f'"{__version__}"' in path.read_text(encoding="utf-8"):
            hits.append(path.relative_to(ROOT).as_posix())
    assert hits == ["bridge/__init__.py"]


def test_options_come_from_the_environment(converted_cnn: Path, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    env = {**os.environ, "BRIDGE_VERIFY_SAMPLES": "3", "BRIDGE_VERIFY_DEVICE": "cpu", "BRIDGE_VERIFY_LATENCY_RUNS": "2"}
    result = subprocess.run([sys.executable, "-m", "bridge", "verify", str(converted_cnn), "--json", str(path)],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(path.read_text())
    assert report["inputs"]["samples"] == 3 and {r["device"] for r in report["representations"]} == {"cpu"}


def test_shell_completion_is_served() -> None:
    script = Path(sys.executable).with_name("bridge")  # completion is keyed to the command's name
    result = subprocess.run([str(script)], capture_output=True, text=True, env={**os.environ, "_BRIDGE_COMPLETE": "bash_source"})
    assert result.returncode == 0 and "complete -o nosort -F _bridge_completion bridge" in result.stdout, result.stdout
    words = subprocess.run([str(script)], capture_output=True, text=True,
                           env={**os.environ, "_BRIDGE_COMPLETE": "bash_complete", "COMP_WORDS": "bridge ver", "COMP_CWORD": "1"})
    assert "plain,verify" in words.stdout


@pytest.mark.slow
def test_verify_json_dash_prints_only_a_valid_report(converted_cnn: Path) -> None:
    result = run_bridge("verify", str(converted_cnn), "--device", "cpu", "--samples", "2", "--latency-runs", "2",
                        "--json", "-")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # stdout is the report and nothing else
    jsonschema.validate(report, SCHEMA)
    assert report["passed"] and "representation" in result.stderr  # the table went to stderr
    assert (converted_cnn / "verify" / "logs" / "onnx.cpu.log").is_file()
    assert all(r["log"] and Path(r["log"]).is_file() for r in report["representations"])


@pytest.mark.slow
def test_convert_output_flag_reports_and_verbose_log(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "mlp.bridge"
    junit = tmp_path / "convert.xml"
    result = run_bridge("convert", str(zoo_model("mlp")), "--to", "onnx", "--output", str(out),
                        "--junit", str(junit), "--markdown", "-", "-v")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("### bridge convert: converted, every artifact verified")
    assert "bridge: INFO: route: torch -> onnx" in result.stderr and "bridge: INFO: torch->onnx [dynamo]: done" in result.stderr
    assert 'tests="1"' in junit.read_text() and 'failures="0"' in junit.read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    onnx = manifest["artifacts"][0]
    assert (out / onnx["log"]).is_file() and (out / onnx["check"]["log"]).is_file()
    # The source's check ran in the torch -> onnx hop's child (torch imported once), so its output is in that log.
    assert not (out / "logs" / "check-source.log").exists()
    assert "running the source's check inputs (2 samples, source.feeds0) in torch" in (out / onnx["log"]).read_text()


@pytest.mark.slow
def test_a_failing_hop_keeps_its_converter_log_and_the_error_names_it(tmp_path: Path) -> None:
    onnx_path = tmp_path / "sinh.onnx"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import onnx
        from onnx import helper, TensorProto
        x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])
        y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])
        g = helper.make_graph([helper.make_node('Sinh', ['x'], ['y'])], 'g', [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8
        onnx.save(m, {str(onnx_path)!r})
    """)], check=True)
    out = tmp_path / "sinh.bridge"
    result = run_bridge("convert", str(onnx_path), "--to", "torch", "-o", str(out))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    match = re.search(r"full log: (\S+\.log)", last)
    assert match, last
    log = Path(match.group(1))
    assert log.is_file() and log.is_relative_to(out) and "Sinh" in log.read_text()


@pytest.mark.heavy  # 80 s: a pytest run inside the test; the plugin's fixtures are the library calls tested elsewhere
def test_a_project_gates_on_equivalence_with_the_pytest_plugin(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_models.py").write_text(textwrap.dedent("""
        import os
        import bridge.testing

        GRU = "bridge.zoo.torch_models:build_gru"

        def test_onnx_is_equivalent(bridge_convert):
            # TEST_CANDIDATE pins torch -> onnx to the exporter whose GRU drifts (dynamo), or lets bridge choose.
            only = [os.environ["TEST_CANDIDATE"]] if os.environ.get("TEST_CANDIDATE") else None
            conversion = bridge_convert(GRU, to="onnx", input_shapes={"x": (1, 12, 8)}, only=only)
            bridge.testing.assert_equivalent(conversion, atol=1e-4)
    """), encoding="utf-8")

    def pytest_in_project(candidate: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TEST_CANDIDATE": candidate}
        return subprocess.run([sys.executable, "-m", "pytest", "-q", str(project)], cwd=project,
                              capture_output=True, text=True, env=env, timeout=600)

    passing = pytest_in_project("")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    cached = sorted((project / ".pytest_cache" / "d" / "bridge").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    again = pytest_in_project("")
    assert again.returncode == 0 and sorted((project / ".pytest_cache" / "d" / "bridge").iterdir()) == cached
    failing = pytest_in_project("dynamo")
    assert failing.returncode == 1, failing.stdout
    assert "the converted model is not equivalent to the source" in failing.stdout
    assert re.search(r"representation\s+runtime\s+device\s+vs parent", failing.stdout), failing.stdout
    assert "drift over tolerance in hop source -> onnx" in failing.stdout
