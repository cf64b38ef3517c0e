"""The unit layer: bridge's pure core, tested with no framework in the process.

Everything under tests/unit is marked ``unit`` and must run in seconds: metrics, tolerance rules,
percentiles, layout carrying, report rendering, route planning, the record serializer, options.
A test here fails if it imported torch, TensorFlow, onnx or onnxruntime (run alone, the whole
layer runs with none of them loaded: ``pytest tests/unit``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

FRAMEWORKS = ("torch", "tensorflow", "keras", "onnx", "onnxruntime", "onnx2tf", "tf2onnx", "onnx2torch", "ai_edge_litert")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def no_framework_imported() -> Iterator[None]:
    before = set(sys.modules)
    yield
    loaded = [m for m in FRAMEWORKS if m in sys.modules and m not in before]
    assert not loaded, f"a unit test imported {', '.join(loaded)}; move it out of tests/unit or keep the import lazy"
