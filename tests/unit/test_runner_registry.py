"""The runner registry: keyed by (format, runtime); several runtimes per format; typed errors."""

from __future__ import annotations

import pytest

from bridge.errors import MissingExtraError, RuntimeLoadError
from bridge.formats import Format, RunnerSpec
from bridge.runtimes.registry import DEFAULT_RUNNERS, RunnerRegistry, load_runner_class


def _spec(fmt: Format, runtime: str, requires: tuple[str, ...] = ()) -> RunnerSpec:
    return RunnerSpec(fmt, runtime, "bridge.runtimes.base:Runner", requires, "x", "x")


def test_the_default_registry_has_a_reference_runtime_per_format() -> None:
    assert {r.format for r in DEFAULT_RUNNERS} == set(Format)
    assert DEFAULT_RUNNERS.primary(Format.ONNX).runtime == "onnxruntime"
    assert DEFAULT_RUNNERS.primary(Format.TFLITE).devices == ("cpu",)


def test_a_second_runtime_for_one_format_is_expressible() -> None:
    registry = RunnerRegistry((_spec(Format.ONNX, "onnxruntime"), _spec(Format.ONNX, "other")))
    assert [r.runtime for r in registry.for_format(Format.ONNX)] == ["onnxruntime", "other"]
    assert registry.primary(Format.ONNX).runtime == "onnxruntime"
    assert registry.get(Format.ONNX, "other").runtime == "other"


def test_missing_runners_are_typed_errors() -> None:
    registry = RunnerRegistry((_spec(Format.ONNX, "onnxruntime"),))
    with pytest.raises(RuntimeLoadError, match="no runtime is registered for tflite"):
        registry.primary(Format.TFLITE)
    with pytest.raises(RuntimeLoadError, match="no runtime 'wasm' is registered for onnx.*onnxruntime"):
        registry.get(Format.ONNX, "wasm")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(_spec(Format.ONNX, "onnxruntime"))


def test_a_runner_whose_extra_is_absent_names_the_install() -> None:
    with pytest.raises(MissingExtraError, match=r"needs bridge_test_absent: pip install 'bridge\[x\]'"):
        load_runner_class(_spec(Format.ONNX, "ghost", ("bridge_test_absent",)))
