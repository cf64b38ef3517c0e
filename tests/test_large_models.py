"""Models over protobuf's 2 GB limit go through ONNX external data.

A real >2 GB model does not fit this test machine's time budget, so the mechanism is tested on
a lowered threshold (BRIDGE_EXTERNAL_DATA_THRESHOLD, docs/safety.md): the weights go to a file
beside model.onnx, every later hop reads them, and verify still passes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_external_data_path_end_to_end(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "cnn.bridge"
    env = {**os.environ, "BRIDGE_EXTERNAL_DATA_THRESHOLD": "1"}
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", str(zoo_model("cnn")), "--to", "tflite",
                             "-o", str(out), "--quiet"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    onnx_artifact = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    assert onnx_artifact["options"]["external_data"] is True
    data_files = [p for p in (out / "onnx").iterdir() if p.name != "model.onnx"]
    assert data_files, "weights should sit in an external data file beside model.onnx"
    # The .onnx itself no longer holds the weights: it is much smaller than the data.
    assert (out / "onnx" / "model.onnx").stat().st_size < sum(p.stat().st_size for p in data_files)
    verify = subprocess.run([sys.executable, "-m", "bridge", "verify", str(out), "--device", "cpu", "--samples", "2",
                             "--latency-runs", "2"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
