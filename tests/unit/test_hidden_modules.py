"""A step's child cannot import the modules its spec hides: TensorFlow's steps skip importing jax."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.formats import Format
from bridge.registry import DEFAULT_REGISTRY
from bridge.runtimes.registry import DEFAULT_RUNNERS


def test_a_hidden_module_is_absent_to_import_and_to_find_spec() -> None:
    code = ("from bridge.isolation import _hide; _hide('wave,csv'); import importlib.util as u\n"
            "assert u.find_spec('wave') is None and u.find_spec('csv') is None and u.find_spec('re') is not None\n"
            "try:\n    import wave\nexcept ImportError:\n    print('absent')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "absent"


def test_jax_is_hidden_only_where_tensorflow_runs_without_it() -> None:
    hidden = {hop.name for hop in DEFAULT_REGISTRY if "jax" in hop.hidden}
    assert {"onnx->tflite", "onnx->tf", "tf->onnx", "tflite->onnx"} <= hidden
    # Hops that run jax, tensorflowjs (its converter imports jax2tf) and Keras (a Lambda may use it) keep it.
    assert not hidden & {"jax->tf", "jax->onnx", "tf->tfjs", "keras->tf", "keras->onnx", "onnx->keras"}
    assert "jax" in DEFAULT_RUNNERS.primary(Format.TF).hidden and "jax" not in DEFAULT_RUNNERS.primary(Format.JAX).hidden
    assert all("jax" not in hop.hidden for hop in DEFAULT_REGISTRY if "jax" in hop.requires)


def test_late_modules_are_not_imported_before_the_request() -> None:
    onnx_to_tflite, onnx_to_tf = DEFAULT_REGISTRY.get(Format.ONNX, Format.TFLITE), DEFAULT_REGISTRY.get(Format.ONNX, Format.TF)
    assert onnx_to_tflite is not None and onnx_to_tf is not None
    assert "tensorflow" in onnx_to_tflite.requires and "tensorflow" not in onnx_to_tflite.modules
    assert "tensorflow" in onnx_to_tf.modules  # it writes a SavedModel


@pytest.mark.slow
def test_onnx_to_tflite_s_first_candidate_never_imports_tensorflow(tmp_path: Path) -> None:
    # y = 2x + 1, converted by the hop's first candidate in a process of its own: TensorFlow stays unimported.
    code = textwrap.dedent(f'''
        import sys
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        from pathlib import Path
        from bridge.formats import Format
        from bridge.hops.base import HopJob
        from bridge.hops.onnx_to_tflite import OnnxToTflite
        from bridge.options import ConvertOptions
        from bridge.registry import DEFAULT_REGISTRY
        from bridge.runtimes.base import read_signature

        two = numpy_helper.from_array(np.full([1, 4], 2.0, np.float32), "two")
        one = numpy_helper.from_array(np.ones([1, 4], np.float32), "one")
        graph = helper.make_graph(
            [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])], "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializer=[two, one])
        src = Path({str(tmp_path)!r}) / "tiny.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), src)
        hop = DEFAULT_REGISTRY.get(Format.ONNX, Format.TFLITE)
        first = next(c for c in hop.candidates if not c.settings.get("large_weights"))
        result = OnnxToTflite().convert(HopJob(src, read_signature(Format.ONNX, src), src.parent / "out", ConvertOptions(), first))
        assert result.produced[0].path.is_file()
        print(first.name, "tensorflow" in sys.modules)
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["flatbuffer_direct", "False"]
