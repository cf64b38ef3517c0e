"""Route planning over the default registry and over registries built by the test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.errors import UnsupportedRouteError
from bridge.formats import Format
from bridge.registry import HopRegistry, HopSpec
from bridge.route import plan, reachable


def test_torch_to_tflite_goes_through_onnx() -> None:
    route = plan(Format.TORCH, [Format.TFLITE])
    assert [h.name for h in route.hops] == ["torch->onnx", "onnx->tflite"]
    assert route.describe() == "torch -> onnx -> tflite"


def test_keras_to_tflite_prefers_its_own_saved_model() -> None:
    route = plan(Format.KERAS, [Format.TFLITE])
    assert [h.name for h in route.hops] == ["keras->tf", "tf->tflite"]


def test_several_targets_share_one_tree_parents_first() -> None:
    route = plan(Format.TORCH, [Format.TFLITE, Format.TF, Format.ONNX])
    names = [h.name for h in route.hops]
    assert names[0] == "torch->onnx"
    assert sorted(names) == ["onnx->tf", "onnx->tflite", "torch->onnx"]


def test_via_forces_the_chain() -> None:
    route = plan(Format.TORCH, [Format.TFLITE], via=[Format.ONNX, Format.TF])
    assert [h.name for h in route.hops] == ["torch->onnx", "onnx->tf", "tf->tflite"]


def test_via_with_a_missing_hop_names_it() -> None:
    with pytest.raises(UnsupportedRouteError, match="no hop tflite -> tf"):
        plan(Format.TORCH, [Format.TF], via=[Format.ONNX, Format.TFLITE])


def test_no_route_is_a_clear_error() -> None:
    # Nothing in the registry reads TF.js.
    with pytest.raises(UnsupportedRouteError, match="no route from tfjs to onnx"):
        plan(Format.TFJS, [Format.ONNX])


def test_ties_break_by_preference_in_a_test_registry() -> None:
    registry = HopRegistry((
        HopSpec(Format.TORCH, Format.ONNX, "x:A", (), "t", "a", preference=0),
        HopSpec(Format.TORCH, Format.TF, "x:B", (), "t", "b", preference=0),
        HopSpec(Format.ONNX, Format.TFLITE, "x:C", (), "t", "c", preference=5),
        HopSpec(Format.TF, Format.TFLITE, "x:D", (), "t", "d", preference=1),
    ))
    route = plan(Format.TORCH, [Format.TFLITE], registry=registry)
    assert [h.name for h in route.hops] == ["torch->tf", "tf->tflite"]


def test_fewest_hops_beats_preference() -> None:
    registry = HopRegistry((
        HopSpec(Format.TORCH, Format.ONNX, "x:A", (), "t", "a"),
        HopSpec(Format.ONNX, Format.TFLITE, "x:B", (), "t", "b"),
        HopSpec(Format.TORCH, Format.TFLITE, "x:C", (), "t", "c", preference=100),
    ))
    assert [h.name for h in plan(Format.TORCH, [Format.TFLITE], registry=registry).hops] == ["torch->tflite"]


def test_duplicate_hop_is_refused() -> None:
    hop = HopSpec(Format.TORCH, Format.ONNX, "x:A", (), "t", "a")
    with pytest.raises(ValueError, match="registered twice"):
        HopRegistry((hop, hop))


def test_reachable_from_each_source() -> None:
    served = (Format.TFJS, Format.TF_SERVING, Format.TORCHSERVE)
    assert reachable(Format.TORCH) == (Format.ONNX, Format.TF, Format.KERAS, Format.TFLITE, *served)
    assert reachable(Format.KERAS) == (Format.TORCH, Format.ONNX, Format.TF, Format.TFLITE, *served)
    assert reachable(Format.JAX) == (Format.TORCH, Format.ONNX, Format.TF, Format.KERAS, Format.TFLITE, *served)
    assert reachable(Format.TFJS) == ()
    # A deployed package is taken back to its model, and from there anywhere.
    assert reachable(Format.TORCHSERVE)[:2] == (Format.TORCH, Format.ONNX)
    assert Format.TORCHSERVE not in reachable(Format.TF_SERVING)[:1] and Format.TF in reachable(Format.TF_SERVING)


def test_listing_hops_and_planning_import_no_framework() -> None:
    # find_spec locates modules without importing them; a fresh interpreter shows what the listing loads.
    code = ("import sys\nfrom bridge.registry import DEFAULT_REGISTRY\nfrom bridge.route import plan\n"
            "from bridge.formats import Format\n[h.missing() for h in DEFAULT_REGISTRY]\n"
            "plan(Format.TORCH, [Format.TFLITE, Format.TF])\n"
            "print([m for m in ('torch', 'tensorflow', 'onnx', 'onnxruntime', 'onnx2tf', 'tf2onnx') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_via_given_as_text_is_split_on_commas_not_characters() -> None:
    from bridge.options import ConvertOptions

    options = ConvertOptions.build(via="onnx")
    assert options.via == (Format.ONNX,)
    route = plan(Format.TORCH, [Format.TFLITE], via=ConvertOptions.build(via="onnx,tf").via)
    assert [h.name for h in route.hops] == ["torch->onnx", "onnx->tf", "tf->tflite"]
