"""A step's child cannot import the modules its spec hides: TensorFlow's steps skip importing jax."""

from __future__ import annotations

import subprocess
import sys

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
