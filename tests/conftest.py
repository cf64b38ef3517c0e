"""Shared fixtures: zoo models exported once and converted once per test session.

Everything runs the real frameworks in child processes (bridge isolates each hop and runtime),
so the test process itself never imports torch and TensorFlow together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests see what a conversion does, not a copy from an earlier one: the conversion cache is off for every
# bridge the suite runs, except where a test or fixture names its own cache (bridge.cache, tests/test_cache.py).
os.environ["BRIDGE_NO_CACHE"] = "1"

def run_bridge(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m bridge``) and return its exit code and output."""
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_model(zoo_dir: Path) -> Callable[[str], Path]:
    """Export a zoo model once per session; returns the model file's path."""
    from bridge.zoo import export

    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = export(name, zoo_dir, force=True).model_path
        return made[name]

    return get


@pytest.fixture(scope="session")
def convert_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Convert a model once per session with the CLI; returns the output directory."""
    made: dict[tuple[str, ...], Path] = {}

    def get(model: Path, *args: str) -> Path:
        key = (str(model), *args)
        if key not in made:
            out = tmp_path_factory.mktemp("converted") / f"{model.stem}.bridge"
            result = run_bridge("convert", str(model), *args, "-o", str(out), "--quiet")
            assert result.returncode == 0, result.stderr
            made[key] = out
        return made[key]

    return get


@pytest.fixture(scope="session")
def converted_cnn(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> Path:
    """The PyTorch CNN converted to every format it reaches (onnx, tf, tflite)."""
    return convert_once(zoo_model("cnn"), "--to", "all")


@pytest.fixture(scope="session")
def converted_mlp(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> Path:
    """The PyTorch MLP converted to onnx and tflite: a small, real folder to tamper with."""
    return convert_once(zoo_model("mlp"), "--to", "tflite")


@pytest.fixture(scope="session")
def converted_keras(zoo_model: Callable[[str], Path], convert_once: Callable[..., Path]) -> Path:
    """The Keras CNN converted to every format it reaches (onnx, tf, tflite, torch)."""
    return convert_once(zoo_model("keras_cnn"), "--to", "all")
