"""Hugging Face Transformers sources: save_pretrained folders, live models and factories, offline, with their
inputs and outputs named, verified against the Transformers model run eagerly. No downloads: the models
are the zoo's tiny BERT, GPT-2 and ViT (bridge/zoo/hf_models.py), built from configs with seeded weights."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_bridge

pytestmark = pytest.mark.slow

MODELS = {"bert": "build_bert", "gpt2": "build_gpt2", "vit": "build_vit"}
INPUTS = {"bert": ["input_ids", "attention_mask", "token_type_ids"], "gpt2": ["input_ids", "attention_mask"],
          "vit": ["pixel_values"]}


def _python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                            timeout=900, env={"HF_HUB_OFFLINE": "1", **__import__("os").environ})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three models written by save_pretrained (config.json and model.safetensors each)."""
    out = tmp_path_factory.mktemp("hf")
    _python(f"""
        from bridge.zoo import hf_models
        for name, builder in {MODELS!r}.items():
            getattr(hf_models, builder)().save_pretrained({str(out)!r} + "/tiny" + name)
    """)
    return out


# With -m heavy (100 s for BERT, 50 s each for GPT-2 and ViT): the default run converts Hugging Face models in the
# lighter tests below (a live model with its names, a dynamic sequence axis, the KV cache, --task).
@pytest.mark.parametrize("name", [pytest.param("bert", marks=pytest.mark.heavy), pytest.param("gpt2", marks=pytest.mark.heavy),
                                  pytest.param("vit", marks=pytest.mark.heavy)])
def test_a_save_pretrained_folder_converts_to_every_format_and_verifies_against_transformers(
        pretrained: Path, tmp_path: Path, name: str) -> None:
    folder, out, report_path = pretrained / f"tiny{name}", tmp_path / f"tiny{name}.bridge", tmp_path / "report.json"
    result = run_bridge("verify", str(folder), "--to", "all", "-o", str(out), "--device", "cpu", "--samples", "3",
                        "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    ran = {r["name"]: r["status"] for r in report["representations"]}
    assert ran == {"eager": "ok", "source": "ok", "onnx": "ok", "tf": "ok", "tflite": "ok"}
    hops = {(c["src"], c["dst"]): c for c in report["hops"]}
    eager = hops[("eager", "source")]  # the Transformers model itself checks the exported program
    assert eager["passed"] and eager["outputs"][0]["name"] == "logits"
    assert all(c["passed"] for c in report["cumulative"]) and len(report["cumulative"]) == 3
    # Outputs are far from zero, so agreement means something.
    assert max(abs(c["outputs"][0]["max_abs"] or 0) for c in report["cumulative"]) < 1e-3
    manifest = json.loads((out / "manifest.json").read_text())
    source = manifest["source"]
    assert source["origin"] == "pretrained_dir" and source["pretrained"]["directory"] == "source/pretrained"
    assert source["pretrained"]["architecture"] == json.loads((folder / "config.json").read_text())["architectures"][0]
    assert [t["name"] for t in source["inputs"]] == INPUTS[name]
    for artifact in manifest["artifacts"]:  # Transformers' names through every artifact
        assert [t["source_name"] for t in artifact["outputs"]] == ["logits"], artifact["path"]
    assert (out / "source" / "pretrained" / "model.safetensors").is_file()


def test_task_and_sequence_length_choose_the_class_and_the_inputs(pretrained: Path, tmp_path: Path) -> None:
    out = tmp_path / "features.bridge"
    result = run_bridge("convert", str(pretrained / "tinybert"), "--to", "onnx", "--task", "feature-extraction",
                        "--seq-len", "8", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["pretrained"] == {"directory": "source/pretrained", "architecture": "AutoModel",
                                                "task": "feature-extraction", "kv_cache": False}
    assert [t["shape"] for t in manifest["source"]["inputs"]] == [[1, 8]] * 3
    assert [t["name"] for t in manifest["source"]["outputs"]] == ["last_hidden_state", "pooler_output"]
    assert manifest["artifacts"][0]["check"]["passed"]
    too_long = run_bridge("convert", str(pretrained / "tinybert"), "--to", "onnx", "--seq-len", "65", "-o",
                          str(tmp_path / "x.bridge"))
    assert too_long.returncode == 2 and "--seq-len 65: the model takes at most 64 positions" in too_long.stderr
    assert not (tmp_path / "x.bridge").exists()


def test_a_live_pretrained_model_converts_with_its_names(tmp_path: Path) -> None:
    """The light form of the heavy test below: one live model, one hop."""
    found = _python(f"""
        import numpy as np
        import bridge
        from bridge.zoo import hf_models
        feeds = {{"input_ids": np.arange(16, dtype=np.int64)[None] % 100, "attention_mask": np.ones((1, 16), np.int64)}}
        conversion = bridge.convert(hf_models.build_gpt2(), to="onnx", example_inputs=feeds, out_dir={str(tmp_path / "g.bridge")!r})
        [artifact] = conversion.artifacts
        print([o.source_name for o in artifact.outputs], artifact.verified)
    """)
    assert found == "['logits'] True"


@pytest.mark.heavy  # 2 min; the folder tests convert the same models to every format, the light test above one live one
def test_live_pretrained_models_convert_with_their_names(tmp_path: Path) -> None:
    found = _python(f"""
        import json
        import numpy as np
        import bridge
        from bridge.zoo import hf_models
        rng = np.random.default_rng(0)
        text = {{"input_ids": rng.integers(0, 100, (1, 16)).astype(np.int64), "attention_mask": np.ones((1, 16), np.int64)}}
        feeds = {{"bert": text, "gpt2": text, "vit": {{"pixel_values": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}}}}
        out = {{}}
        for name, builder in {MODELS!r}.items():
            conversion = bridge.convert(getattr(hf_models, builder)(), to="all", example_inputs=feeds[name],
                                        out_dir={str(tmp_path)!r} + "/" + name + ".bridge")
            out[name] = {{a.key: ([o.source_name for o in a.outputs], a.verified) for a in conversion.artifacts}}
        print(json.dumps(out))
    """)
    for name, artifacts in json.loads(found).items():
        assert set(artifacts) == {"onnx", "tf", "tflite"}, name
        assert all(names == ["logits"] and verified for names, verified in artifacts.values()), (name, artifacts)


@pytest.mark.heavy  # 30 s; the eager check of a factory is tested on a torch factory (test_untrusted_folder)
def test_a_factory_that_returns_a_pretrained_model_is_checked_against_it_eagerly(tmp_path: Path) -> None:
    out = tmp_path / "vit.bridge"
    converted = run_bridge("convert", "bridge.zoo.hf_models:build_vit", "--to", "onnx", "-o", str(out), "-q")
    assert converted.returncode == 0, converted.stderr
    report = tmp_path / "r.json"
    verified = run_bridge("verify", str(out), "--factory", "bridge.zoo.hf_models:build_vit", "--device", "cpu",
                          "--samples", "2", "--json", str(report))
    assert verified.returncode == 0, verified.stderr
    hops = {(c["src"], c["dst"]): c for c in json.loads(report.read_text())["hops"]}
    assert hops[("eager", "source")]["passed"] and hops[("eager", "source")]["outputs"][0]["name"] == "logits"


def test_a_dynamic_sequence_axis_is_kept_and_checked_at_two_lengths(pretrained: Path, tmp_path: Path) -> None:
    out = tmp_path / "dyn.bridge"
    result = run_bridge("convert", str(pretrained / "tinybert"), "--to", "onnx", "--dynamic-seq", "--seq-len", "12",
                        "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    source = manifest["source"]
    assert source["sequence_length"] == 12 and all(isinstance(t["shape"][1], str) for t in source["inputs"])
    assert manifest["checks"]["lengths"] == [12, 6]
    [onnx] = manifest["artifacts"]
    assert all(not isinstance(t["shape"][1], int) for t in onnx["inputs"])  # the ONNX model keeps the axis
    checked = [o["name"] for o in onnx["check"]["outputs"]]
    assert checked == ["logits", "logits (batch 1 length 6)"] and onnx["check"]["passed"]


def test_the_kv_cache_is_an_output_only_when_asked_for(pretrained: Path, tmp_path: Path) -> None:
    out = tmp_path / "kv.bridge"
    result = run_bridge("convert", str(pretrained / "tinygpt2"), "--to", "onnx", "--kv-cache", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    names = ["logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    assert [t["name"] for t in manifest["source"]["outputs"]] == names and manifest["source"]["pretrained"]["kv_cache"]
    assert [t["source_name"] for t in manifest["artifacts"][0]["outputs"]] == names
    assert manifest["artifacts"][0]["check"]["passed"]
    refused = run_bridge("convert", str(pretrained / "tinybert"), "--to", "onnx", "--kv-cache", "-o", str(tmp_path / "no"))
    assert refused.returncode == 2 and "not a causal language model" in refused.stderr
    assert str(pretrained / "tinybert") in refused.stderr and not (tmp_path / "no").exists()
