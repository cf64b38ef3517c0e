"""bridge as an ONNX backend: ONNX's own backend test runner (onnx.backend.test.BackendTest) over bridge's conversions,
on a subset of its node tests for each target (the full run is a documented command, docs/formats.md)."""

from __future__ import annotations

import re
import unittest

import pytest

pytest.importorskip("onnx")
pytestmark = pytest.mark.slow

from onnx.backend.test import BackendTest  # noqa: E402

from bridge.formats import Format  # noqa: E402
from bridge.onnx_backend import backend_for  # noqa: E402

SUBSET = {
    Format.TFLITE: (r"^test_relu_cpu$",),
    Format.TORCH: (r"^test_relu_cpu$",),
    Format.TF: (r"^test_softmax_axis_1_cpu$",),
}
HEAVY_SUBSET = {Format.TFLITE: (r"^test_add_bcast_cpu$", r"^test_maxpool_2d_default_cpu$")}
"""With -m heavy; docs/coverage.md has every op."""


def _chosen(target: Format, patterns: tuple[str, ...], name: str, *marks: pytest.MarkDecorator) -> type[unittest.TestCase]:
    """ONNX's generated test methods for `target` that match `patterns`, alone in a TestCase (not its other 10,000)."""
    tests = BackendTest(backend_for(target), __name__)
    for pattern in patterns:
        tests.include(pattern)
    methods = {name: method for case in tests.test_cases.values() for name, method in vars(case).items()
               if name.startswith("test_") and any(re.search(p, name) for p in patterns)}
    assert len(methods) == len(patterns), sorted(methods)
    return type(name, (unittest.TestCase,), {**methods, "pytestmark": [pytestmark, *marks]})


for _target, _patterns in SUBSET.items():
    globals()[f"OnnxNodeTests_{_target.value}"] = _chosen(_target, _patterns, f"OnnxNodeTests_{_target.value}")
for _target, _patterns in HEAVY_SUBSET.items():
    globals()[f"OnnxNodeTestsHeavy_{_target.value}"] = _chosen(_target, _patterns, f"OnnxNodeTestsHeavy_{_target.value}",
                                                               pytest.mark.heavy)


def test_the_coverage_page_counts_what_onnxs_runner_found() -> None:
    """An opset-6 PyTorch-converted case through bridge to TFLite, compared with the outputs ONNX ships."""
    from bridge.coverage import PASS, render, run_cases

    results = list(run_cases(Format.TFLITE, ["pytorch-converted"], r"^AvgPool2d$"))
    assert [(r.case, r.status) for r in results] == [("AvgPool2d", PASS)], results
    text = render(results, command="python -m bridge.coverage --cases AvgPool2d")
    assert "| tflite | pytorch-converted | 1 | 1 | 0 | 0 | 0 |" in text and "| **tflite** | all | 1 | 1 | 0 | 0 | 0 |" in text


def test_the_bare_converters_run_the_same_cases_beside_bridge() -> None:
    """onnx2torch alone cannot read the opset-6 AvgPool2d that bridge lifts first; the page counts it as bridge's gain."""
    from bridge.coverage import ERROR, PASS, render, run_cases

    bare = list(run_cases("onnx2torch", ["node", "pytorch-converted"], r"^(relu|AvgPool2d)$"))
    assert [(r.suite, r.case, r.status, r.op) for r in bare] == [("node", "relu", PASS, "Relu"),
                                                                 ("pytorch-converted", "AvgPool2d", ERROR, "")]
    assert "Converter is not implemented" in bare[1].reason and "AveragePool" in bare[1].reason
    from bridge.coverage import CaseResult

    through_bridge = [CaseResult("node", "relu", "torch", PASS, op="Relu"), CaseResult("pytorch-converted", "AvgPool2d", "torch", PASS)]
    text = render([*through_bridge, *bare])
    assert "| torch | 2 | 1 | 2 | 1 | 0 |" in text, text
    assert "| Relu | pass | pass |" in text
    assert "| onnx2torch alone -> torch | pytorch-converted | AvgPool2d | error |" in text
