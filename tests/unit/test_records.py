"""bridge.records: the one serializer of typed records; a value that does not fit names its field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.formats import Format
from bridge.manifest import Tool
from bridge.messages import REQUESTS, HopRequest, HopResponse, Produced, RunRequest, StepError
from bridge.options import ConvertOptions
from bridge.records import RecordError, from_json, to_json
from bridge.registry import DEFAULT_REGISTRY
from bridge.runtimes.registry import DEFAULT_RUNNERS
from bridge.signature import Signature, TensorSpec

SIGNATURE = Signature((TensorSpec("x", ("batch", 3, 8, 8), "float32", "input", (0, 2, 3, 1)),),
                      (TensorSpec("y", (None, 10), "float32"),))


def test_a_hop_request_survives_json_exactly() -> None:
    hop = DEFAULT_REGISTRY.by_name("onnx->tflite")
    request = HopRequest(hop, Path("/a/model.onnx"), SIGNATURE, Path("/b"),
                         ConvertOptions(opset=17, via=(Format.ONNX,), timeout=2.5, tol={"y": 0.5}), hop.candidates[-1])
    again = from_json(HopRequest, json.loads(json.dumps(to_json(request))))
    assert again == request
    assert isinstance(again.src, Path) and again.options.via == (Format.ONNX,)
    assert again.candidate.settings == {"backend": "flatbuffer_direct", "via_saved_model": True}
    assert again.signature.inputs[0].shape == ("batch", 3, 8, 8) and again.signature.inputs[0].perm == (0, 2, 3, 1)


def test_a_response_with_nested_records() -> None:
    response = HopResponse((Produced(Path("/o/model.tflite"), SIGNATURE, "float16"),), Tool("onnx2tf", "2.6.9"),
                           {"tflite_backend": "flatbuffer_direct", "nested": {"a": [1, 2]}}, ("a note",))
    assert from_json(HopResponse, to_json(response)) == response


def test_every_request_names_a_response_type_that_is_a_record() -> None:
    assert set(REQUESTS) == {"hop", "materialize", "inspect", "run", "capture", "cut", "embedding_sizes", "zoo_export",
                             "pretrained", "opset_upgrade", "onnx_census"}
    for task, cls in REQUESTS.items():
        assert cls.task == task
        assert hasattr(cls.response, "__dataclass_fields__"), task


@pytest.mark.parametrize(("change", "path", "problem"), [
    (lambda d: d.pop("device"), "device", "is missing"),
    (lambda d: d.update(samples="8"), "samples", "expected an integer"),
    (lambda d: d.update(samples=True), "samples", "expected an integer"),
    (lambda d: d["runner"].update(format="coreml"), "runner.format", "'coreml' is not one of"),
    (lambda d: d.update(input_specs=[{"name": "x", "shape": [1, "b", None], "dtype": 3}]), "input_specs[0].dtype",
     "expected a string"),
    (lambda d: d.update(inputs=["not", "a", "path"]), "inputs", "expected a path string"),
])
def test_a_value_that_does_not_fit_names_the_field(change, path: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    request = RunRequest(DEFAULT_RUNNERS.primary(Format.ONNX), Path("m.onnx"), "cpu", Path("i.npz"), Path("o.npz"),
                         8, 20, 3, input_specs=(TensorSpec("x", (1, 3), "float32"),))
    data = to_json(request)
    change(data)
    with pytest.raises(RecordError) as caught:
        from_json(RunRequest, data)
    assert caught.value.path == path and problem in str(caught.value)


def test_defaults_fill_missing_optional_fields_and_null_is_refused_where_not_optional() -> None:
    assert from_json(StepError, {"type": "InputError", "message": "m"}) == StepError("InputError", "m")
    with pytest.raises(RecordError, match="message: expected a string, got None"):
        from_json(StepError, {"type": "InputError", "message": None})


def test_fixed_length_tuples_and_unknown_types() -> None:
    @dataclass(frozen=True)
    class Pair:
        value: tuple[int, str]

    assert from_json(Pair, {"value": [1, "a"]}) == Pair((1, "a"))
    with pytest.raises(RecordError, match="expected 2 items"):
        from_json(Pair, {"value": [1]})
    with pytest.raises(TypeError):
        to_json(object())
