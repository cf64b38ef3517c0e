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


def test_external_data_path_end_to_end_and_back_to_torch(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
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
    # Back to torch from that ONNX: onnx2torch's hop lowers the opset on the graph without its weights (the version
    # converter serializes the model, which protobuf refuses past 2 GB) and reads them in only for onnx2torch.
    back = tmp_path / "back.bridge"
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", str(out / "onnx" / "model.onnx"), "--to", "torch",
                             "-o", str(back), "--quiet"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    torch_artifact = next(a for a in json.loads((back / "manifest.json").read_text())["artifacts"] if a["format"] == "torch")
    assert torch_artifact["check"]["passed"], torch_artifact
    assert any(n.endswith("weights read from external data") for n in torch_artifact["notes"]), torch_artifact["notes"]


HALF_MODEL = """
import sys, torch
class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)
    def forward(self, x):
        return self.l2(torch.nn.functional.gelu(self.l1(x)))
torch.manual_seed(0)
dtype = getattr(torch, sys.argv[1])
program = torch.export.export(Mlp().to(dtype).eval(), (torch.randn(2, 8, dtype=dtype),))
torch.export.save(program, sys.argv[2])
"""


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])  # bf16 is widened to float32; fp16 goes as it is
def test_a_half_precision_source_reaches_tflite_and_tf_and_is_judged_by_its_own_precision(dtype: str, tmp_path: Path) -> None:
    """The way big checkpoints ship: bf16 is widened to float32 at torch -> onnx (nothing after it has bf16) and said so;
    fp16 goes as it is. Every comparison uses the source dtype's tolerance (docs/formats.md, half precision)."""
    model = tmp_path / f"{dtype}.pt2"
    subprocess.run([sys.executable, "-c", HALF_MODEL, dtype, str(model)], check=True, timeout=300)
    out = tmp_path / f"{dtype}.bridge"
    result = subprocess.run([sys.executable, "-m", "bridge", "convert", str(model), "--to", "tflite,tf", "-o", str(out), "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["inputs"][0]["dtype"] == dtype
    onnx_artifact = next(a for a in manifest["artifacts"] if a["format"] == "onnx")
    widened = [n for n in onnx_artifact["notes"] if "widened to float32" in n]
    assert onnx_artifact["inputs"][0]["dtype"] == ("float32" if dtype == "bfloat16" else "float16")
    assert bool(widened) == (dtype == "bfloat16")
    verify = subprocess.run([sys.executable, "-m", "bridge", "verify", str(out), "--device", "cpu", "--samples", "4",
                             "--latency-runs", "1", "--json", "-"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr
    report = json.loads(verify.stdout)
    assert {"tflite", "tf"} <= {hop["dst"] for hop in report["cumulative"]}, report["cumulative"]
    drifts = [d for hop in report["hops"] for d in hop["outputs"]]
    assert drifts and all(d["tolerance"]["source"] == f"default {dtype}" for d in drifts), drifts
    assert max(d["max_abs"] for d in drifts) < 1e-2, drifts
