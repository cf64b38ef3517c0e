"""Localisation's numpy side on hand-built graphs: layouts, joins, the walk, the record in the report."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from bridge import records
from bridge.errors import InputError
from bridge.localization.graph import CapturedGraph, GraphNode, SourceRef, TensorReader, TensorStore, user_frame
from bridge.localization.join import CHANNELS_LAST, RESHAPED, SAME, ValueIndex, measure, name_pairs
from bridge.localization.result import AGREES, BY_NAMES, DIVERGES, Localization, OpDrift
from bridge.localization.run import worst_sample
from bridge.localization.walk import Walk, ancestors, target_ops
from bridge.options import LocalizeOptions
from bridge.signature import TensorSpec
from bridge.verification.compare import ToleranceRules
from bridge.verification.report import InputsRecord, Report

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "bridge" / "verification" / "report_schema.json").read_text())
RNG = np.random.default_rng(0)


def test_a_child_tensor_is_compared_in_the_parents_layout() -> None:
    nchw = RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)
    nhwc = nchw.transpose(0, 2, 3, 1).copy()
    found = measure(nchw, nhwc, 1e-4, 1e-3, "t")
    assert found is not None and found.layout == CHANNELS_LAST and found.max_abs == 0.0
    assert measure(nchw, nchw.copy(), 1e-4, 1e-3, "t").layout == SAME  # type: ignore[union-attr]
    assert measure(nchw, nchw.reshape(3, 4, 5), 1e-4, 1e-3, "t").layout == RESHAPED  # type: ignore[union-attr]
    assert measure(nchw, nchw[:, :2], 1e-4, 1e-3, "t") is None  # another size: no comparison


def test_over_tolerance_is_the_largest_ratio_to_the_elements_bound() -> None:
    expected = np.array([1.0, 100.0], dtype=np.float32)
    actual = np.array([1.0002, 100.05], dtype=np.float32)
    found = measure(expected, actual, 1e-4, 1e-3, "t", (SAME,))
    assert found is not None
    # element 0: 2e-4 / (1e-4 + 1e-3) = 0.18; element 1: 0.05 / (1e-4 + 0.1) = 0.4995
    assert found.over == pytest.approx(0.4995, rel=1e-2)
    assert found.max_abs == pytest.approx(0.05, rel=1e-3)


def test_a_nan_where_the_parent_has_a_number_is_infinitely_over() -> None:
    found = measure(np.array([1.0, 2.0]), np.array([1.0, np.nan]), 1e-4, 1e-3, "t", (SAME,))
    assert found is not None and found.over == float("inf")
    same = measure(np.array([1.0, np.nan]), np.array([1.0, np.nan]), 1e-4, 1e-3, "t", (SAME,))
    assert same is not None and same.over == 0.0


def _store(tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> tuple[Path, dict[str, str]]:
    path = tmp_path / f"{name}.npz"
    with TensorStore(path) as store:
        for key, value in tensors.items():
            store.put(key, value)
        store.put("words", np.array(["a", "b"]))  # not numeric: not kept
        return path, dict(store.keys)


def test_the_store_keeps_numeric_tensors_under_short_keys_and_reads_one_at_a_time(tmp_path: Path) -> None:
    weird = "a/b:0 ../../etc"  # a model's names may hold any character: never a file name
    path, keys = _store(tmp_path, "s", {weird: np.ones((2, 2), np.float32), "i": np.arange(3)})
    assert keys == {weird: "t0", "i": "t1"}
    graph = CapturedGraph((), (), (), keys)
    reader = TensorReader(graph, path)
    try:
        assert reader.get(weird).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # type: ignore[union-attr]
        assert reader.get("words") is None and not reader.has("words")
    finally:
        reader.close()


def test_value_join_finds_the_transposed_copy_among_tensors_of_the_same_size(tmp_path: Path) -> None:
    wanted = RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)
    decoy = RNG.standard_normal((1, 3, 3, 4)).astype(np.float32) * 3
    path, keys = _store(tmp_path, "child", {"decoy": decoy, "moved": wanted.transpose(0, 2, 3, 1).copy()})
    child = CapturedGraph((), (), (), keys)
    reader = TensorReader(child, path)
    try:
        found = ValueIndex(child, reader).closest(wanted, 1e-4, 1e-3)
    finally:
        reader.close()
    assert found is not None and found.target == "moved" and found.layout == CHANNELS_LAST and found.over == 0.0


def test_names_join_through_recorded_renames_first() -> None:
    parent = CapturedGraph((GraphNode("n1", "Conv", ("x",), ("conv",)), GraphNode("n2", "Relu", ("conv",), ("relu",)),
                            GraphNode("n3", "Gemm", ("relu",), ("a:0",))), ("x",), ("a:0",))
    child = CapturedGraph((), ("x",), ("a__0",), {"fused_nhwc": "t0", "relu": "t1", "a__0": "t2"}, aliases={"conv": "fused_nhwc"})
    assert name_pairs(parent, child) == {"conv": "fused_nhwc", "relu": "relu", "a:0": "a__0"}


def _measure(over: float, target: str = "c") -> object:
    from bridge.localization.join import Measure

    return Measure(target, over * 1e-4, over * 1e-3, over, SAME)


def _chain() -> CapturedGraph:
    """x -> conv -> relu -> pool -> fc -> y, with module paths."""
    def node(name: str, op: str, src: str, dst: str, module: str) -> GraphNode:
        return GraphNode(name, op, (src,), (dst,), SourceRef(module, "Conv2d" if op == "Conv" else op, "net.py:12", "y = f(x)"))

    return CapturedGraph((node("conv", "Conv", "x", "t_conv", "features.0"), node("relu", "Relu", "t_conv", "t_relu", "features.1"),
                          node("pool", "MaxPool", "t_relu", "t_pool", "features.2"), node("fc", "Gemm", "t_pool", "y", "head")),
                         ("x",), ("y",))


def test_the_first_divergent_op_is_the_first_whose_output_fails_while_its_inputs_pass() -> None:
    graph = _chain()
    results = {"x": _measure(0), "t_conv": _measure(0.2), "t_relu": _measure(40), "t_pool": _measure(45), "y": _measure(50)}
    walk = Walk(graph, graph.nodes, results)  # type: ignore[arg-type]
    first = walk.first()
    assert first is not None and first.name == "relu"
    drift = walk.drift(first, CapturedGraph((), (), ()), set(), with_fused=True)
    assert drift.over == 40 and drift.inputs_over == pytest.approx(0.2) and drift.source.module == "features.1"  # type: ignore[union-attr]
    # relu adds the most; pool and fc only carry theirs (they add 5 each)
    assert [n.name for n in walk.top(1)] == ["relu"]
    assert [n.name for n in walk.top(10)] == ["relu", "pool", "fc"]


def test_an_op_without_a_child_tensor_is_named_with_the_op_that_absorbed_it() -> None:
    graph = _chain()
    results = {"x": _measure(0), "t_conv": None, "t_relu": _measure(30), "t_pool": _measure(30), "y": _measure(31)}
    walk = Walk(graph, graph.nodes, results)  # type: ignore[arg-type]
    first = walk.first()
    assert first is not None and first.name == "relu" and walk.fused_with(first) == ("conv",)


def test_a_failing_tensor_whose_consumer_passes_is_not_a_verdict() -> None:
    # The child fused conv+relu: the conv tensor is compared with the relu output and "fails"; relu passes.
    graph = _chain()
    results = {"x": _measure(0), "t_conv": _measure(500), "t_relu": _measure(0.1), "t_pool": _measure(0.1), "y": _measure(9)}
    walk = Walk(graph, graph.nodes, results)  # type: ignore[arg-type]
    assert not walk.decided("t_conv") and walk.decided("t_relu")
    first = walk.first()
    assert first is not None and first.name == "fc"


def test_the_cone_of_an_output_and_the_childs_ops_between_joined_tensors() -> None:
    graph = _chain()
    assert ancestors(graph, ["t_relu"]) == {"conv", "relu"}
    child = CapturedGraph((GraphNode("CONV_2D#0", "CONV_2D", ("x",), ("a",)), GraphNode("MAX_POOL_2D#1", "MAX_POOL_2D", ("a",), ("b",)),
                           GraphNode("FULLY_CONNECTED#2", "FULLY_CONNECTED", ("b",), ("y",))), ("x",), ("y",))
    assert target_ops(child, "y", {"a"}) == ("MAX_POOL_2D#1", "FULLY_CONNECTED#2")
    assert target_ops(child, "y", {"x"}) == ("CONV_2D#0", "MAX_POOL_2D#1", "FULLY_CONNECTED#2")


def test_the_worst_sample_is_the_one_furthest_over_tolerance() -> None:
    expected = {"y": np.zeros((4, 3), np.float32)}
    actual = {"y": np.array([[0, 0, 0], [0, 1e-3, 0], [0, 0, 0.5], [0, 0, 0]], np.float32)}
    assert worst_sample(expected, actual, (TensorSpec("y", (1, 3), "float32"),), ToleranceRules()) == 2


@pytest.mark.parametrize(("text", "pair"), [("source->onnx", ("source", "onnx")), (" onnx -> tflite", ("onnx", "tflite")),
                                            ("torch:onnx", ("torch", "onnx"))])
def test_hop_names(text: str, pair: tuple[str, str]) -> None:
    assert LocalizeOptions(hop=text).hop_pair() == pair


@pytest.mark.parametrize("text", ["onnx-", "onnx", "a->b->c", "->onnx"])
def test_a_hop_name_that_is_not_a_pair_says_how_to_write_it(text: str) -> None:
    with pytest.raises(InputError, match="PARENT->CHILD"):
        LocalizeOptions(hop=text).hop_pair()


def test_user_frame_skips_library_frames() -> None:
    trace = ('File "/usr/lib/python3.12/site-packages/torch/nn/modules/module.py", line 1, in _call\n    return f()\n'
             'File "/home/me/net.py", line 42, in forward\n    x = self.conv(x)\n')
    assert user_frame(trace, Path("/srv")) == ("/home/me/net.py:42", "x = self.conv(x)")
    assert user_frame(trace, Path("/home/me")) == ("net.py:42", "x = self.conv(x)")  # relative to the working directory


def _localization() -> Localization:
    first = OpDrift("node_conv2d_1", "Conv", "conv2d_1", "conv_nhwc", ("CONV_2D#2",), 1.9, 3.0, 12700.0, 0.0008, False,
                    CHANNELS_LAST, SourceRef("features.3", "torch.nn.modules.conv.Conv2d", "net.py:68", "return self.f(x)"),
                    ("node_max_pool2d",))
    return Localization("onnx -> tflite", "onnx->tflite", "flatbuffer_direct", DIVERGES, BY_NAMES, 3, None, first,
                        (first,), (), 8, 8, 1e-4, 1e-3, 0.6, notes=("a note",))


def test_a_localisation_goes_into_the_json_report_and_back(tmp_path: Path) -> None:
    report = Report("m.json", InputsRecord(0, 4, "ab" * 32, "i.npz", True), (), (), (), localization=(_localization(),))
    data = json.loads(report.dumps())
    jsonschema.validate(data, SCHEMA)
    assert data["localization"][0]["first"]["source"]["module"] == "features.3"
    path = tmp_path / "r.json"
    report.write(path)
    assert Report.read(path).localization == report.localization
    markdown = report.to_markdown()
    assert "First divergent operation: **Conv `node_conv2d_1`** in `features.3` at `net.py:68`" in markdown


def test_a_tampered_localisation_is_refused_with_its_field(tmp_path: Path) -> None:
    report = Report("m.json", InputsRecord(0, 4, "ab" * 32, "i.npz", True), (), (), (), localization=(_localization(),))
    data = json.loads(report.dumps())
    data["localization"][0]["status"] = "fine"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="localization"):
        Report.read(path)


def test_terminal_lines_name_the_op_its_module_and_line() -> None:
    lines = _localization().lines()
    assert lines[0].startswith("onnx -> tflite: first divergent op Conv node_conv2d_1 (computed together with node_max_pool2d)")
    assert "features.3 (Conv2d), net.py:68" in lines[0]
    agrees = Localization("a -> b", "onnx->tflite", "", AGREES, "", 0, None, None, (), (), 0, 0, 1e-4, 1e-3, 0.0)
    assert agrees.summary() == "a -> b: nothing diverges: within tolerance on sample 0"
    assert records.from_json(Localization, records.to_json(agrees)) == agrees


def test_integer_tensors_are_dequantised_per_tensor_and_per_axis() -> None:
    from bridge.runtimes.tflite_capture import _dequantised

    per_tensor = {"quantization_parameters": {"scales": np.array([0.5]), "zero_points": np.array([2]),
                                              "quantized_dimension": 0}}
    assert _dequantised(np.array([2, 4], np.int8), per_tensor).tolist() == [0.0, 1.0]
    per_axis = {"quantization_parameters": {"scales": np.array([1.0, 0.1]), "zero_points": np.array([0, 0]),
                                            "quantized_dimension": 1}}
    assert np.allclose(_dequantised(np.array([[10, 10]], np.int8), per_axis), [[10.0, 1.0]])
    floats = np.array([1.5], np.float32)
    assert _dequantised(floats, per_tensor) is floats  # a float tensor is left as it is


def test_the_layer_that_adds_the_quantization_noise_is_named_not_the_ones_that_carry_it(tmp_path: Path) -> None:
    """x -> conv -> relu -> gemm: the conv is quantized badly (its output noisy), relu only carries the noise,
    gemm adds more noise of its own: the two named, in graph order, conv losing the most; relu is not."""
    from types import SimpleNamespace

    from bridge.localization.quantized import LayerErrors, layer_errors
    from bridge.signature import Signature

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    conv = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    relu = np.maximum(conv, 0)
    gemm = rng.standard_normal((1, 10)).astype(np.float32)
    noisy_conv = conv + 0.1 * rng.standard_normal(conv.shape).astype(np.float32)  # about 20 dB
    child_tensors = {"x": x, "conv": noisy_conv.transpose(0, 2, 3, 1), "relu": np.maximum(noisy_conv, 0).transpose(0, 2, 3, 1),
                     "gemm": gemm + 0.5 * rng.standard_normal(gemm.shape).astype(np.float32)}
    nodes = (GraphNode("c", "Conv", ("x",), ("conv",)), GraphNode("r", "Relu", ("conv",), ("relu",)),
             GraphNode("g", "Gemm", ("relu",), ("gemm",)))
    parent_path, parent_keys = _store(tmp_path, "parent", {"x": x, "conv": conv, "relu": relu, "gemm": gemm})
    child_path, child_keys = _store(tmp_path, "child", child_tensors)
    parent = CapturedGraph(nodes, ("x",), ("gemm",), parent_keys)
    child = CapturedGraph(nodes, ("x",), ("gemm",), child_keys)  # the quantizer kept the names, not the layout
    spec_in, spec_out = TensorSpec("x", (1, 4, 3, 3), "float32"), TensorSpec("gemm", (1, 10), "float32")
    side = SimpleNamespace(signature=Signature((spec_in,), (spec_out,)))
    hop = SimpleNamespace(name="onnx -> onnx-int8", formats="onnx->onnx", parent=side, child=side)
    expected, actual = TensorReader(parent, parent_path), TensorReader(child, child_path)
    try:
        found = layer_errors(hop, parent, child, expected, actual, top=2, sample=0)
    finally:
        expected.close()
        actual.close()
    assert found.method == BY_NAMES and [layer.op for layer in found.layers] == ["Conv", "Gemm"]  # graph order
    conv_loss = found.layers[0]
    assert 15 < conv_loss.sqnr_db < 25 and conv_loss.lost_db > 170  # its inputs were exact (200 dB)
    assert found.worst is conv_loss and "loses" in found.lines()[1]
    assert records.from_json(LayerErrors, json.loads(json.dumps(records.to_json(found))), "layers") == found
