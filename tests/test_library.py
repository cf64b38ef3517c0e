"""The library API used from pipelines: bridge.convert / bridge.verify, references and live modules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import bridge
from bridge.conversion import Conversion
from bridge.errors import HopError, OutputError
from tests.conftest import run_bridge

pytestmark = pytest.mark.slow


@pytest.mark.heavy  # 30 s; one convert and one verify in a process are what every other test here does
def test_convert_then_verify_twice_in_one_process(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    model = zoo_model("mlp")
    for attempt in range(2):  # the package's functions must survive their own submodules being imported
        conversion = bridge.convert(model, to="onnx", out_dir=tmp_path / "mlp.bridge", force=attempt > 0)
        assert isinstance(conversion, Conversion) and conversion.ok
        assert conversion.path("onnx").is_file()
        report = bridge.verify(conversion, devices=("cpu",), samples=2, latency_runs=2)
        assert report.passed and bool(report) and report.exit_code == 0
        assert report.to_json()["passed"] is True


def test_existing_output_dir_needs_force(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "keep"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(OutputError, match="pass --force"):
        bridge.convert(zoo_model("mlp"), to="onnx", out_dir=out)
    assert (out / "precious.txt").read_text() == "mine"


@pytest.mark.heavy  # 90 s in CI; a factory named on the command line is built in test_untrusted_folder and the JAX tests
def test_python_reference_source(tmp_path: Path) -> None:
    out = tmp_path / "ref.bridge"
    result = run_bridge("convert", "bridge.zoo.torch_models:build_mlp", "--to", "onnx", "--input-shape", "x:1,10",
                        "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    conversion_manifest = (out / "manifest.json").read_text()
    assert '"path": "bridge.zoo.torch_models:build_mlp"' in conversion_manifest
    assert '"materialized": "source/model.pt2"' in conversion_manifest
    report_path = tmp_path / "ref.json"
    verify = run_bridge("verify", str(out), "--device", "cpu", "--samples", "2", "--json", str(report_path),
                        "--factory", "bridge.zoo.torch_models:build_mlp")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(report_path.read_text())
    # The factory's eager module runs too, and the saved ExportedProgram is checked against it.
    eager = next(h for h in report["hops"] if h["src"] == "eager")
    assert eager["dst"] == "source" and eager["passed"]
    assert next(r for r in report["representations"] if r["name"] == "eager")["path"] == "bridge.zoo.torch_models:build_mlp"


def test_live_module_and_failed_hop_keeps_earlier_artifacts(tmp_path: Path) -> None:
    code = f"""
import torch, bridge
from bridge.errors import HopError
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Tanh())
c = bridge.convert(model, to="onnx", example_inputs=(torch.randn(1, 6),), out_dir={str(tmp_path / 'live.bridge')!r})
print("SOURCE", c.manifest.source.kind, c.manifest.source.materialized)
print("PASSED", bridge.verify(c, devices=("cpu",), samples=2, latency_runs=2).passed)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "SOURCE exported_program source/model.pt2" in out.stdout
    assert "PASSED True" in out.stdout


def test_strict_convert_raises_with_the_partial_conversion(tmp_path: Path) -> None:
    # onnx2torch 1.5.15 has no converter for Sinh; onnx2tf has one.
    onnx_path = tmp_path / "m.onnx"
    subprocess.run([sys.executable, "-c", (
        "import onnx\nfrom onnx import helper, TensorProto\n"
        "x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 4])\n"
        "y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 4])\n"
        "g = helper.make_graph([helper.make_node('Sinh', ['x'], ['y'])], 'g', [x], [y])\n"
        "m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8\n"
        f"onnx.save(m, {str(onnx_path)!r})\n")], check=True)
    with pytest.raises(HopError) as caught:
        bridge.convert(onnx_path, to=["tflite", "torch"], out_dir=tmp_path / "m.bridge")
    assert "hop onnx->torch failed" in str(caught.value) and "Sinh" in str(caught.value)
    conversion = caught.value.conversion
    assert isinstance(conversion, Conversion)
    assert not conversion.ok and [f.hop for f in conversion.failures] == ["onnx->torch"]
    assert [a.key for a in conversion.artifacts] == ["tflite"] and conversion.path("tflite").is_file()
    assert (tmp_path / "m.bridge" / "manifest.json").is_file()


def test_torchscript_source_needs_and_takes_input_shapes(tmp_path: Path) -> None:
    script = tmp_path / "mlp.pt"
    subprocess.run([sys.executable, "-c", (
        "import torch\nfrom bridge.zoo.torch_models import build_mlp\n"
        f"torch.jit.save(torch.jit.trace(build_mlp(), torch.randn(1, 10)), {str(script)!r})\n")], check=True)
    missing = run_bridge("convert", str(script), "--to", "onnx", "-o", str(tmp_path / "a.bridge"))
    assert missing.returncode == 2 and "--input-shape" in missing.stderr
    assert not (tmp_path / "a.bridge").exists()
    bad = run_bridge("convert", str(script), "--to", "onnx", "--input-shape", "x:1,ten")
    assert bad.returncode == 2 and "expected NAME:D0,D1" in bad.stderr
    out = tmp_path / "b.bridge"
    good = run_bridge("convert", str(script), "--to", "onnx", "--input-shape", "x:1,10", "-o", str(out), "--quiet")
    assert good.returncode == 0, good.stderr
    assert '"kind": "torchscript"' in (out / "manifest.json").read_text()
    assert run_bridge("verify", str(out), "--device", "cpu", "--samples", "2").returncode == 0


def test_a_missing_extra_fails_its_hop_only(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    from bridge.formats import Format
    from bridge.registry import DEFAULT_REGISTRY, HopRegistry, HopSpec

    real = DEFAULT_REGISTRY.get(Format.ONNX, Format.TF)
    assert real is not None
    registry = HopRegistry(tuple(
        HopSpec(h.src, h.dst, h.target, (*h.requires, "bridge_test_not_installed"), h.extra, h.tool) if h is real else h
        for h in DEFAULT_REGISTRY
    ))
    conversion = bridge.convert(zoo_model("mlp"), to="tflite,tf", out_dir=tmp_path / "x.bridge", registry=registry, strict=False)
    assert [a.key for a in conversion.artifacts] == ["onnx", "tflite"]
    assert conversion.failures[0].hop == "onnx->tf"
    assert "bridge_test_not_installed" in conversion.failures[0].error and "pip install" in conversion.failures[0].error
