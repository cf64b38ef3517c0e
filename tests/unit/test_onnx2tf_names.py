"""onnx2tf's renamings that bridge follows when it records each tensor's layout (bridge/hops/onnx2tf_common.py)."""

from __future__ import annotations

import pytest

from bridge.errors import HopError
from bridge.hops.onnx2tf_common import hop_perms
from bridge.signature import Signature, TensorSpec


def test_an_input_named_by_a_number_is_found_under_the_savedmodels_arg_name() -> None:
    # ONNX's PyTorch-converted tests name their input "0"; the SavedModel's signature calls it arg_0.
    parent = Signature((TensorSpec("0", (1, 3, 8), "float32"),), (TensorSpec("y", (1, 3, 4), "float32"),))
    child = Signature((TensorSpec("arg_0", (1, 8, 3), "float32"),), (TensorSpec("y", (1, 4, 3), "float32"),))
    perms, _ = hop_perms(parent, child, {"y"}, set(), "onnx->tf")
    assert perms == {"arg_0": (0, 2, 1), "y": (0, 2, 1)}
    stranger = Signature((TensorSpec("arg_x", (1, 8, 3), "float32"),), child.outputs)
    with pytest.raises(HopError, match="'arg_x' of the converted model has no tensor of that name"):
        hop_perms(parent, stranger, {"y"}, set(), "onnx->tf")
