"""Pre-flight (`bridge check`) and the opset step downwards: what an ONNX file holds, judged against measured coverage
before any conversion; a source newer than onnx2torch reads is lowered and checked, or kept with the op that blocks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_bridge

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _save(path: Path, nodes: list, opset: int, *, extra: tuple[tuple[str, int], ...] = (), out_shape: list[int] | None = None,
          initializers: tuple = ()) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or [2, 3])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    onnx.save(model, str(path))
    return path


def _gelu20(tmp_path: Path) -> Path:
    return _save(tmp_path / "gelu.onnx", [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gelu", ["r"], ["y"])], 20)


def _reshape21(tmp_path: Path) -> Path:
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [3, 2])
    return _save(tmp_path / "reshape.onnx", [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s"], ["y"])],
                 21, out_shape=[3, 2], initializers=(shape,))


def test_check_names_the_op_a_target_fails_and_the_target_that_covers_it(tmp_path: Path) -> None:
    from bridge.onnx_check import Coverage, OpCoverage, check

    coverage = Coverage({"Relu": {"tflite": OpCoverage(passed=1), "torch": OpCoverage(passed=1)},
                         "Gelu": {"tflite": OpCoverage(failed=1, reason="gelu: Mismatched elements: 3 / 6"),
                                  "torch": OpCoverage(passed=1)}}, command="test")
    report = check(_gelu20(tmp_path), "tflite,torch", coverage=coverage)
    assert report.census.opsets[""] == 20 and report.census.unlowerable == ("Gelu",)
    assert "Gelu has no opset-18 form" in report.opset_step
    tflite, torch = report.targets
    gelu = next(o for o in tflite.ops if o.op == "Gelu")
    assert (gelu.status, gelu.covered_by, gelu.blocks) == ("fail", ("torch",), True)
    assert "Mismatched elements" in gelu.reason
    assert tflite.blocked and not torch.blocked
    assert report.exit_code == 1 and not report


def test_check_cli_refuses_nothing_but_names_a_custom_domain_op(tmp_path: Path) -> None:
    model = _save(tmp_path / "contrib.onnx", [helper.make_node("Relu", ["x"], ["r"]),
                                              helper.make_node("FastGelu", ["r"], ["y"], domain="com.microsoft")],
                  17, extra=(("com.microsoft", 1),))
    result = run_bridge("check", str(model), "--to", "tflite")
    assert result.returncode == 1, result.stderr
    assert "BLOCKS  com.microsoft.FastGelu x1  custom domain" in result.stdout
    assert "tflite (onnx -> tflite; op coverage measured to tflite)" in result.stdout
    as_json = run_bridge("check", str(model), "--to", "tfjs", "--json", "-")
    found = json.loads(as_json.stdout)
    assert found["exit_code"] == 1 and found["targets"][0]["route"] == "onnx -> tf -> tfjs"
    assert [o["status"] for o in found["targets"][0]["ops"]] == [found["targets"][0]["ops"][0]["status"], "custom domain"]


def test_check_reads_the_shipped_coverage(tmp_path: Path) -> None:
    """The per-op results docs/coverage.md was made from are installed with bridge; Relu passes everywhere they were measured."""
    from bridge.onnx_check import load_coverage

    coverage = load_coverage()
    assert coverage.command.startswith("python -m bridge.coverage")
    for target in ("tflite", "torch"):
        assert sum(coverage.of(op, target).status != "not measured" for op in coverage.ops) >= 180, target
    model = _save(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"])], 17)
    result = run_bridge("check", str(model), "--to", "tflite,torch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tflite (onnx -> tflite; op coverage measured to tflite): 1 pass" in result.stdout
    assert result.stdout.count("nothing known to block this target") == 2


def test_check_of_a_file_that_is_not_onnx_is_refused_in_one_line(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    result = run_bridge("check", str(model), "--to", "onnx")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"bridge: error: {model}: bridge check reads ONNX files; convert it to ONNX "
                                                  f"first (bridge convert {model} --to onnx)"]


def test_an_op_with_no_older_form_keeps_the_opset_and_names_it(tmp_path: Path) -> None:
    from bridge.messages import OpsetUpgradeRequest
    from bridge.onnx_opset import upgrade

    response = upgrade(OpsetUpgradeRequest(_gelu20(tmp_path), tmp_path / "lowered.onnx", 18))
    assert response.upgrade is None and not (tmp_path / "lowered.onnx").exists()
    assert response.kept.startswith("opset 20 kept: it cannot be lowered to 18 (op Gelu blocks it")


def test_a_newer_opset_is_lowered_and_checked_in_process(tmp_path: Path) -> None:
    from bridge.messages import OpsetUpgradeRequest
    from bridge.onnx_opset import default_opset, upgrade

    response = upgrade(OpsetUpgradeRequest(_reshape21(tmp_path), tmp_path / "lowered.onnx", 18))
    assert response.upgrade is not None
    assert (response.upgrade.from_opset, response.upgrade.to_opset, response.upgrade.checked_with) == (21, 18, "onnxruntime on both")
    assert response.upgrade.max_abs == 0.0
    assert default_opset(onnx.load(str(tmp_path / "lowered.onnx"))) == 18


@pytest.mark.slow
def test_a_newer_opset_reaches_torch_and_the_manifest_records_the_step(tmp_path: Path) -> None:
    """onnx2torch called alone on this file says "Converter is not implemented (... Reshape, version=21)"."""
    out = tmp_path / "reshape.bridge"
    result = run_bridge("convert", str(_reshape21(tmp_path)), "--to", "torch", "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "opset 21 is newer than onnx2torch reads; lowered to opset 18" in result.stderr
    upgrade = json.loads((out / "manifest.json").read_text())["source"]["upgrade"]
    assert (upgrade["from_opset"], upgrade["to_opset"]) == (21, 18)


def test_convert_candidates_starts_with_the_pre_flight(tmp_path: Path) -> None:
    result = run_bridge("convert", str(_gelu20(tmp_path)), "--to", "tflite", "--candidates")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'gelu.onnx'}: opset 20, 2 nodes, 2 op types")
    assert any(line.startswith("onnx->tflite (onnx2tf") for line in lines), lines


def test_outputs_that_are_nan_in_both_agree_when_lowering(tmp_path: Path) -> None:
    """Acos of the standard-normal check inputs is NaN wherever |x| > 1, in the original and the lowered copy alike."""
    from bridge.messages import OpsetUpgradeRequest
    from bridge.onnx_opset import upgrade

    model = _save(tmp_path / "acos.onnx", [helper.make_node("Acos", ["x"], ["y"])], 22)
    response = upgrade(OpsetUpgradeRequest(model, tmp_path / "lowered.onnx", 18))
    assert response.upgrade is not None and response.upgrade.max_abs == 0.0


@pytest.mark.slow
def test_an_output_whose_size_follows_the_input_values_is_that_representations_error(tmp_path: Path) -> None:
    """TopK with k an input (the corpus' topk_k_input.onnx), on two samples asking k = 1 and k = 2: the outputs cannot
    be stacked, and verify says so per representation instead of crashing (it raised numpy's ValueError)."""
    import subprocess
    import sys

    import numpy as np

    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, "fixtures/hostile/build.py", str(corpus)], check=True, timeout=300)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=np.arange(8, dtype=np.float32).reshape(2, 1, 4), k=np.array([[1], [2]], dtype=np.int64))
    result = run_bridge("verify", str(corpus / "topk_k_input.onnx"), "--to", "tflite", "-o", str(tmp_path / "topk.bridge"),
                        "--device", "cpu", "--latency-runs", "1", "--inputs", str(inputs), "--no-check")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "output 'y' has another shape for each sample ((1, 1), (1, 2))" in result.stderr
    assert "nothing was compared: the representations above could not run" in result.stderr
    assert "Traceback" not in result.stderr
