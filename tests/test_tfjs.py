"""TF.js: a SavedModel converted with the tensorflowjs converter (installed without its conflicting dependencies,
beside a small stand-in for decision forests) and run in Node.js on TF.js's CPU and WebAssembly backends: two
runtimes of one format, two rows in the report, latency measured in JavaScript."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.conversion import parse_targets
from bridge.formats import Format
from bridge.registry import DEFAULT_REGISTRY
from bridge.runtimes.tfjs_runner import missing
from bridge.zoo import export
from tests.conftest import run_bridge

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(missing()), reason=f"TF.js runners unavailable: {missing()}")]


def _node_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", "runtimes/tfjs/run.js"], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="session")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], subprocess.CompletedProcess[str]]:
    """The zoo's MLP converted to TF.js and verified on the CPU: its folder, report and the verify run."""
    work = tmp_path_factory.mktemp("tfjs")
    model = export("mlp", work).model_path
    out, report = work / "mlp.bridge", work / "report.json"
    result = run_bridge("verify", str(model), "--to", "tfjs", "-o", str(out), "--device", "cpu", "--samples", "3",
                        "--json", str(report))
    return out, json.loads(report.read_text()), result


def test_a_graph_model_runs_in_node_on_two_backends_each_checked(
        mlp: tuple[Path, dict[str, object], subprocess.CompletedProcess[str]]) -> None:
    """Two rows, one per backend, latency from JavaScript. The MLP runs right on TF.js's CPU backend and wrong
    on its WebAssembly one (TF.js 4.22, docs/tfjs.md): only that row fails, and verify exits 1."""
    out, report, result = mlp
    manifest = json.loads((out / "manifest.json").read_text())
    tfjs = next(a for a in manifest["artifacts"] if a["format"] == "tfjs")
    assert (tfjs["hop"], tfjs["tool"]) == ("tf->tfjs", {"name": "tensorflowjs", "version": "4.22.0"})
    assert tfjs["check"]["passed"]  # the convert's check runs the reference runtime, node-cpu
    folder = out / tfjs["path"]
    assert (folder / "model.json").is_file() and list(folder.glob("group1-shard*.bin"))
    rows = {(r["name"], r["runtime"]): r for r in report["representations"]}  # type: ignore[attr-defined]
    cpu, wasm = rows[("tfjs", "node-cpu")], rows[("tfjs:node-wasm", "node-wasm")]
    assert cpu["status"] == wasm["status"] == "ok"
    assert cpu["latency_ms"]["p50"] > 0 and wasm["latency_ms"]["p50"] > 0  # measured inside JavaScript
    passed = {c["dst"]: c["passed"] for c in report["cumulative"]}  # type: ignore[attr-defined]
    assert passed == {"onnx": True, "tf": True, "tfjs": True, "tfjs:node-wasm": False}
    assert result.returncode == 1 and "tfjs -> tfjs:node-wasm" in result.stderr
    assert _node_processes() == []


def test_all_leaves_tfjs_and_keras_to_be_named() -> None:
    assert parse_targets("all", Format.TORCH, DEFAULT_REGISTRY) == (Format.ONNX, Format.TF, Format.TFLITE)
    assert parse_targets("all,tfjs,keras", Format.TORCH, DEFAULT_REGISTRY)[-2:] == (Format.TFJS, Format.KERAS)
    assert parse_targets("tfjs", Format.TORCH, DEFAULT_REGISTRY) == (Format.TFJS,)


def test_the_decision_forests_stand_in_lives_only_while_tensorflowjs_is_imported() -> None:
    code = textwrap.dedent("""
        import sys
        from bridge.hops.tf_to_tfjs import SHIM, decision_forests_shim
        with decision_forests_shim():
            import tensorflowjs.converters.tf_saved_model_conversion_v2 as tfjs
            assert SHIM in sys.modules
        assert SHIM not in sys.modules and callable(tfjs.convert_tf_saved_model)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "ok", result.stderr[-2000:]
