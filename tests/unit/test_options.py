"""ConvertOptions and VerifyOptions check their values when built; keywords override a base."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import InputError
from bridge.formats import Format
from bridge.options import ConvertOptions, VerifyOptions


def test_build_applies_changes_and_ignores_none() -> None:
    base = ConvertOptions(opset=17, fp16=True)
    built = ConvertOptions.build(base, opset=None, dynamic_batch=True, from_format="keras", via="onnx,tf")
    assert built == ConvertOptions(from_format=Format.KERAS, via=(Format.ONNX, Format.TF), opset=17, dynamic_batch=True,
                                   fp16=True)
    assert VerifyOptions.build(devices="cpu", inputs="x.npz").devices == ("cpu",)
    assert VerifyOptions.build(inputs="x.npz").inputs == Path("x.npz")


@pytest.mark.parametrize(("cls", "changes", "message"), [
    (ConvertOptions, {"torch_exporter": "jit"}, "use one of dynamo, torchscript"),
    (ConvertOptions, {"opset": 3}, "opset 3"),
    (ConvertOptions, {"timeout": 0}, "positive"),
    (ConvertOptions, {"via": "onnx,coreml"}, "unknown format 'coreml'"),
    (VerifyOptions, {"samples": 0}, "at least one sample"),
    (VerifyOptions, {"devices": ("tpu",)}, "device 'tpu'"),
    (VerifyOptions, {"atol": -1.0}, "--atol -1.0"),
    (VerifyOptions, {"tol": {"y": float("nan")}}, "--tol y"),
    (VerifyOptions, {"int_high": 0}, "--int-high 0"),
])
def test_bad_values_are_one_input_error(cls: type, changes: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        cls.build(**changes)  # type: ignore[attr-defined]


def test_an_unknown_option_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no option 'colour'"):
        ConvertOptions.build(colour="red")
