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

def run_bridge(*args: str, cwd: Path | None = None, timeout: float = 900,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (``python -m bridge``) and return its exit code and output."""
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conversion cache for this test session, shared by the xdist workers (their base folders' parent is the
    session's): a conversion that one worker's fixture made is a copy for the other's. Never kept across sessions,
    so a change to bridge's code is always converted afresh."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "bridge-cache"


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where zoo models are exported: one folder for the session, shared by the xdist workers."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "zoo"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def zoo_model(zoo_dir: Path) -> Callable[[str], Path]:
    """Export a zoo model once per session (whichever worker asks first; the other waits and reuses it);
    returns the model file's path. Tests copy a model before they change it."""
    import fcntl

    from bridge.zoo import export

    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            with (zoo_dir / f".{name}.lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                done = zoo_dir / f".{name}.done"
                if done.is_file():
                    made[name] = Path(done.read_text())
                else:
                    made[name] = export(name, zoo_dir, force=True).model_path
                    done.write_text(str(made[name]))
        return made[name]

    return get


@pytest.fixture(scope="session")
def convert_once(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Callable[..., Path]:
    """Convert a model once per session with the CLI (through the session's cache); returns the output directory."""
    made: dict[tuple[str, ...], Path] = {}

    def get(model: Path, *args: str) -> Path:
        key = (str(model), *args)
        if key not in made:
            out = tmp_path_factory.mktemp("converted") / f"{model.stem}.bridge"
            result = run_bridge("convert", str(model), *args, "-o", str(out), "--quiet", "--cache-dir", str(session_cache))
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
