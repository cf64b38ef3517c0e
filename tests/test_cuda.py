"""CUDA verification: every runtime that can use the GPU runs there and is compared with its CPU run.

Skipped, with the reason, on machines without an NVIDIA driver (the default CI machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.verification.run import cuda_present
from tests.conftest import run_bridge

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not cuda_present(), reason="no NVIDIA driver on this machine: CUDA cannot be tested here"),
]


def test_cpu_against_cuda(converted_cnn: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "cuda.json"
    result = run_bridge("verify", str(converted_cnn), "--device", "cpu", "--device", "cuda", "--samples", "4",
                        "--json", str(report_path))
    report = json.loads(report_path.read_text())
    by_key = {(r["name"], r["device"]): r for r in report["representations"]}
    # torch and onnxruntime have CUDA builds in the pinned stack; LiteRT is CPU-only by design.
    assert by_key[("source", "cuda")]["status"] == "ok", by_key[("source", "cuda")]
    assert by_key[("onnx", "cuda")]["status"] == "ok", by_key[("onnx", "cuda")]
    assert by_key[("tflite", "cuda")]["status"] == "unavailable"
    devices = {c["src"] for c in report["devices"]}
    assert {"source", "onnx"} <= devices
    for comparison in report["devices"]:
        assert comparison["passed"], comparison
    assert result.returncode == 0, result.stderr
