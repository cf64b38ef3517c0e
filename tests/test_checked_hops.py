"""Checked hops: convert runs every artifact as it is made, keeps a candidate that agrees, never passes on nothing.

Real models and runtimes, through the CLI: the four cases that convert used to pass with a broken
or drifting artifact, the record of every attempt, --no-check, --candidates/--prefer/--only, and
verify's refusal to pass when nothing was compared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_bridge

pytestmark = pytest.mark.slow


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def _artifact(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    return next(a for a in manifest["artifacts"] if a["format"] == key and a["precision"] == "float32")


def _verify(out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    report = out.parent / f"{out.name}.report.json"
    result = run_bridge("verify", str(out), "--device", "cpu", "--samples", "4", "--latency-runs", "2",
                        "--json", str(report), *args)
    return result, json.loads(report.read_text())


def _python(code: str, cwd: Path) -> None:
    """Run `code` as a script file in `cwd` (TorchScript's compiler reads class sources from files)."""
    script = cwd / "make_model.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_gru_from_a_pt2_keeps_a_candidate_that_matches_pytorch(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "gru.bridge"
    result = run_bridge("convert", str(zoo_model("gru")), "--to", "tflite", "-o", str(out))
    assert result.returncode == 0, result.stderr
    onnx = _artifact(_manifest(out), "onnx")
    assert [a["candidate"] for a in onnx["attempts"]] == ["dynamo", "dynamo-decomposed"]
    first, kept = onnx["attempts"]
    assert first["outcome"] == "drift" and first["max_abs"] > 1e-2 and first["output"] == "output_0"
    assert kept["outcome"] == "passed" and onnx["candidate"] == "dynamo-decomposed" and onnx["check"]["passed"]
    assert "torch -> onnx: dynamo drift" in result.stderr and "kept dynamo-decomposed" in result.stderr
    verified, report = _verify(out)
    assert verified.returncode == 0, verified.stderr
    assert max(o["max_abs"] for c in report["cumulative"] for o in c["outputs"]) < 1e-4


def test_no_check_restores_the_unchecked_conversion(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "gru.bridge"
    result = run_bridge("convert", str(zoo_model("gru")), "--to", "onnx", "-o", str(out), "--no-check")
    assert result.returncode == 0, result.stderr
    manifest = _manifest(out)
    onnx = _artifact(manifest, "onnx")
    assert onnx["candidate"] == "dynamo" and onnx["check"] is None and manifest["checks"] is None
    assert [a["outcome"] for a in onnx["attempts"]] == ["not checked"]
    verified, _ = _verify(out)
    assert verified.returncode == 1 and "hop source -> onnx" in verified.stderr  # the drift is still there for verify to find


def test_when_nothing_verifies_the_closest_is_kept_and_convert_exits_1(zoo_model: Callable[[str], Path],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "gru.bridge"
    result = run_bridge("convert", str(zoo_model("gru")), "--to", "onnx", "--only", "dynamo", "-o", str(out))
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bridge: error: hop torch->onnx: no candidate agrees with its parent")
    assert "output_0 max abs 0.0" in last and "manifest.json" in last
    manifest = _manifest(out)
    failure = manifest["failures"][0]
    assert failure["hop"] == "torch->onnx" and failure["kept"] == "onnx" and failure["attempts"][0]["outcome"] == "drift"
    onnx = _artifact(manifest, "onnx")
    assert (out / onnx["path"]).is_file() and onnx["check"]["passed"] is False
    assert onnx["kept_because"].startswith("the closest of 1 candidate")


@pytest.mark.heavy  # 42 s; a candidate kept after another failed is tested by the GRU case, the LSTM by the matrix
def test_lstm_reaches_tflite_within_tolerance_without_flags(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    out = tmp_path / "lstm.bridge"
    result = run_bridge("convert", str(zoo_model("lstm")), "--to", "tflite", "-o", str(out))
    assert result.returncode == 0, result.stderr
    tflite = _artifact(_manifest(out), "tflite")
    assert tflite["attempts"][0] == {**tflite["attempts"][0], "candidate": "flatbuffer_direct", "outcome": "drift"}
    assert tflite["attempts"][0]["max_abs"] > 1e-4
    assert tflite["candidate"] in ("tf_converter", "saved_model") and tflite["check"]["passed"]
    verified, report = _verify(out)
    assert verified.returncode == 0, verified.stderr
    tflite_source = next(c for c in report["cumulative"] if c["dst"] == "tflite")
    assert tflite_source["outputs"][0]["max_abs"] < 1e-4


@pytest.mark.heavy  # 50 s; test_manifest checks the symbolic batch in each artifact, this runs two batch sizes
def test_dynamic_batch_pt2_to_tf_runs_at_two_batch_sizes(tmp_path: Path) -> None:
    _python("""
        import torch
        from bridge.zoo.torch_models import build_cnn
        program = torch.export.export(build_cnn(), (torch.randn(2, 1, 28, 28),),
                                      dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
        torch.export.save(program, "dyn_cnn.pt2")
    """, tmp_path)
    out = tmp_path / "dyn.bridge"
    result = run_bridge("convert", str(tmp_path / "dyn_cnn.pt2"), "--to", "tf,tflite", "-o", str(out))
    assert result.returncode == 0, result.stderr
    manifest = _manifest(out)
    assert manifest["checks"]["batches"] == [1, 2]
    tf = _artifact(manifest, "tf")
    assert tf["check"]["passed"] and tf["candidate"] != "static_shapes"
    assert any(o["name"] == "output_0 (batch 2)" for o in tf["check"]["outputs"])
    # The SavedModel takes a batch it was never checked at, too.
    code = f"""
        import numpy as np, tensorflow as tf
        fn = tf.saved_model.load({str(out / tf['path'])!r}).signatures["serving_default"]
        for batch in (1, 3):
            out = fn(x=tf.constant(np.zeros((batch, 28, 28, 1), np.float32)))
            assert out["output_0"].shape == (batch, 10), out
    """
    _python(code, tmp_path)


def test_a_torchscript_transformer_encoder_is_recovered_by_a_later_candidate(tmp_path: Path) -> None:
    """A scripted BERT-style encoder: torch.onnx's dynamo exporter cannot take a ScriptModule; TorchScript's can."""
    _python("""
        import math, numpy as np, torch
        from torch import nn
        torch.manual_seed(0)
        class Layer(nn.Module):
            def __init__(self, d: int = 32, heads: int = 4):
                super().__init__()
                self.h, self.dk = heads, d // heads
                self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
                self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
                self.ff = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
            def forward(self, x, mask):
                b, t, d = x.shape
                q = self.q(x).view(b, t, self.h, self.dk).transpose(1, 2)
                k = self.k(x).view(b, t, self.h, self.dk).transpose(1, 2)
                v = self.v(x).view(b, t, self.h, self.dk).transpose(1, 2)
                att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk) + mask, -1) @ v
                x = self.n1(x + self.o(att.transpose(1, 2).reshape(b, t, d)))
                return self.n2(x + self.ff(x))
        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok, self.pos = nn.Embedding(100, 32), nn.Embedding(16, 32)
                self.layers = nn.ModuleList([Layer(), Layer()])
                self.cls = nn.Linear(32, 2)
            def forward(self, input_ids, attention_mask):
                x = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]).unsqueeze(0))
                mask = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
                for layer in self.layers:
                    x = layer(x, mask)
                return self.cls(x[:, 0])
        torch.jit.save(torch.jit.script(Encoder().eval()), "encoder.pt")
        ids = np.arange(16, dtype=np.int64)[None] % 7
        np.savez("inputs.npz", input_ids=ids, attention_mask=(ids < 12).astype(np.int64))
    """, tmp_path)
    out = tmp_path / "encoder.bridge"
    result = run_bridge("convert", str(tmp_path / "encoder.pt"), "--example-inputs", str(tmp_path / "inputs.npz"),
                        "--to", "tflite", "-o", str(out))
    assert result.returncode == 0, result.stderr
    manifest = _manifest(out)
    onnx = _artifact(manifest, "onnx")
    outcomes = {a["candidate"]: a["outcome"] for a in onnx["attempts"]}
    assert outcomes == {"dynamo": "failed", "dynamo-decomposed": "not applicable", "torchscript": "passed"}
    assert _artifact(manifest, "tflite")["check"]["passed"]
    verified, _ = _verify(out, "--inputs", str(tmp_path / "inputs.npz"))
    assert verified.returncode == 0, verified.stderr


@pytest.mark.heavy  # 53 s; the detour's planning is unit-tested (tests/unit/test_route.py)
def test_a_tflite_that_flatbuffer_direct_cannot_make_comes_by_a_longer_route(tmp_path: Path) -> None:
    """Conv weights computed in the graph: onnx2tf's direct backends give up; the SavedModel route verifies."""
    _python("""
        import numpy as np, onnx
        from onnx import helper, TensorProto, numpy_helper
        w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
        half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
        nodes = [helper.make_node("Mul", ["W", "half"], ["Wc"]), helper.make_node("Sin", ["Wc"], ["Ws"]),
                 helper.make_node("Conv", ["x", "Ws"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w, half])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]); model.ir_version = 8
        onnx.save(model, "computed_weights.onnx")
    """, tmp_path)
    out = tmp_path / "cw.bridge"
    result = run_bridge("convert", str(tmp_path / "computed_weights.onnx"), "--to", "tflite", "-o", str(out))
    manifest = _manifest(out)
    failure = next(f for f in manifest["failures"] if f["hop"] == "onnx->tflite")
    if failure["resolved_by"] is None:  # a newer onnx2tf may convert it directly; then the direct route verified
        pytest.fail(f"neither the direct candidates nor a longer route verified: {result.stderr}")
    assert result.returncode == 0, result.stderr
    assert manifest["route"] == [failure["resolved_by"]] and failure["resolved_by"].endswith("-> tf -> tflite")
    tflite = _artifact(manifest, "tflite")
    assert tflite["made_from"] == "tf" and tflite["check"]["passed"]
    verified, _ = _verify(out)
    assert verified.returncode == 0, verified.stderr


@pytest.mark.heavy  # 120 s in CI; --candidates is listed in test_onnx_check, --only pins the GRU in the nothing-verifies case above
def test_candidates_are_listed_and_pinned(zoo_model: Callable[[str], Path], tmp_path: Path) -> None:
    listed = run_bridge("convert", str(zoo_model("lstm")), "--to", "tflite", "--candidates", "--prefer", "saved_model")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == "torch->onnx (torch.onnx):" and lines[1].split()[:2] == ["1.", "dynamo"]
    assert lines[4] == "onnx->tflite (onnx2tf):" and lines[5].split()[:2] == ["1.", "saved_model"]
    assert not (tmp_path / "lstm.bridge").exists() and not (zoo_model("lstm").parent / "lstm.bridge").exists()
    out = tmp_path / "pinned.bridge"
    pinned = run_bridge("convert", str(zoo_model("lstm")), "--to", "tflite", "--only", "tf_converter", "-o", str(out))
    assert pinned.returncode == 0, pinned.stderr
    assert [a["candidate"] for a in _artifact(_manifest(out), "tflite")["attempts"]] == ["tf_converter"]
    unknown = run_bridge("convert", str(zoo_model("lstm")), "--to", "tflite", "--prefer", "nope", "-o", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "no hop has a candidate 'nope'" in unknown.stderr
    assert not (tmp_path / "x").exists()


def test_verify_on_an_absent_device_compares_nothing_and_exits_2(converted_cnn: Path, tmp_path: Path) -> None:
    if Path("/proc/driver/nvidia/version").exists():
        pytest.skip("a GPU is present: CUDA runs here")
    path = tmp_path / "cuda.json"
    result = run_bridge("verify", str(converted_cnn), "--device", "cuda", "--samples", "2", "--json", str(path))
    report = json.loads(path.read_text())
    assert result.returncode == 2 and report["exit_code"] == 2 and not report["passed"]
    assert "nothing was compared" in result.stderr and "--allow-unavailable" in result.stderr
    allowed = run_bridge("verify", str(converted_cnn), "--device", "cuda", "--samples", "2", "--allow-unavailable")
    assert allowed.returncode == 0, allowed.stderr


def test_model_shaped_inputs_verify_exactly_like_a_sample_axis(converted_cnn: Path, tmp_path: Path) -> None:
    sample = np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)
    one, stacked = tmp_path / "one.npz", tmp_path / "stacked.npz"
    np.savez(one, x=sample)
    np.savez(stacked, x=sample[np.newaxis])
    first, a = _verify(converted_cnn, "--inputs", str(one))
    second, b = _verify(converted_cnn, "--inputs", str(stacked))
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert a["inputs"]["samples"] == b["inputs"]["samples"] == 1
    assert [[o["max_abs"] for o in c["outputs"]] for c in a["cumulative"]] == \
        [[o["max_abs"] for o in c["outputs"]] for c in b["cumulative"]]
    providers = {r["name"]: (r["runtime"], r["provider"]) for r in a["representations"]}
    assert providers["onnx"] == ("onnxruntime", "CPUExecutionProvider") and providers["tflite"][0] == "litert"
