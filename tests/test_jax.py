"""JAX sources: a Flax module and a jax.numpy function, built by a package.module:factory, exported with jax.export,
converted to ONNX (jax2onnx) and TFLite (jax2tf, and through ONNX), and verified against JAX itself.

The models are the zoo's (bridge/zoo/jax_models.py): seeded weights, the CNN's BatchNorm with measured statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_bridge

pytestmark = pytest.mark.slow

CNN = "bridge.zoo.jax_models:build_flax_cnn"
FUNCTION = "bridge.zoo.jax_models:build_jnp_function"


@pytest.fixture(scope="session")
def flax_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Flax NNX CNN converted to ONNX and TFLite (default routes), and verified on the CPU."""
    out = tmp_path_factory.mktemp("jax") / "cnn.bridge"
    result = run_bridge("verify", CNN, "--to", "onnx,tflite", "-o", str(out), "--device", "cpu", "--samples", "3",
                        "--json", str(out.parent / "report.json"))
    assert result.returncode == 0, result.stderr
    return out


def test_a_flax_module_reaches_tflite_verified_against_jax(flax_cnn: Path) -> None:
    manifest = json.loads((flax_cnn / "manifest.json").read_text())
    source = manifest["source"]
    assert (source["format"], source["kind"], source["origin"]) == ("jax", "flax_nnx", "factory")
    assert source["materialized"] == "source/model.jaxexport"
    assert [(t["name"], t["shape"]) for t in source["inputs"]] == [("image", [1, 16, 16, 3])]
    made = {a["format"]: a for a in manifest["artifacts"]}
    assert (made["onnx"]["hop"], made["tf"]["hop"], made["tflite"]["hop"]) == ("jax->onnx", "jax->tf", "tf->tflite")
    assert all(a["check"]["passed"] for a in manifest["artifacts"])
    # jax2tf's route keeps JAX's NHWC layout: the TFLite model takes the image as JAX does.
    assert made["tflite"]["inputs"][0]["shape"] == [1, 16, 16, 3] and made["tflite"]["inputs"][0]["perm"] == [0, 1, 2, 3]
    assert any("XlaCallModule" in note for note in made["tf"]["notes"])
    report = json.loads((flax_cnn.parent / "report.json").read_text())
    source_run = next(r for r in report["representations"] if r["name"] == "source")
    assert source_run["runtime"] == "jax" and source_run["status"] == "ok" and source_run["latency_ms"]["p50"] > 0
    assert {c["dst"] for c in report["cumulative"] if c["passed"]} == {"onnx", "tf", "tflite"}
    # The outputs are far from zero, so agreement means something.
    with _source_outputs(flax_cnn) as data:
        assert float(np.abs(data["output_0"]).max()) > 0.05


def _source_outputs(folder: Path) -> np.lib.npyio.NpzFile:
    """The source's outputs on the verify inputs, computed from the saved artifact with JAX."""
    out = folder.parent / "source-outputs.npz"
    _python(f"""
        import numpy as np
        from jax import export
        exported = export.deserialize(bytearray(open({str(folder / 'source' / 'model.jaxexport')!r}, 'rb').read()))
        with np.load({str(folder.parent / 'report.inputs.npz')!r}) as feeds:
            result = exported.call({{name: feeds[name][0] for name in feeds.files}})
        np.savez({str(out)!r}, **{{k: np.asarray(v) for k, v in result.items()}})
    """)
    return np.load(out)


def _python(code: str, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def test_a_jnp_function_reaches_onnx_and_tflite_with_its_output_names(tmp_path: Path) -> None:
    out = tmp_path / "function.bridge"
    result = run_bridge("convert", FUNCTION, "--to", "tflite", "--via", "onnx", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "jax_function"
    assert [t["name"] for t in manifest["source"]["inputs"]] == ["x", "y"]
    assert manifest["route"] == ["jax -> onnx -> tflite"]
    for artifact in manifest["artifacts"]:  # the function's dict keys name the outputs of every artifact
        assert [t["source_name"] for t in artifact["outputs"]] == ["probabilities", "projection"], artifact["path"]
        assert artifact["check"]["passed"], artifact["path"]


def test_a_jaxexport_file_says_why_onnx_needs_the_factory(flax_cnn: Path, tmp_path: Path) -> None:
    """(From the file, jax2tf makes the SavedModel as from the factory: the fixture's jax -> tf hop reads only the file.)"""
    saved = flax_cnn / "source" / "model.jaxexport"
    result = run_bridge("convert", str(saved), "--to", "onnx", "-o", str(tmp_path / "onnx.bridge"))
    assert result.returncode == 2  # a hop that made nothing
    assert "jax2onnx converts the Python function" in result.stderr and "package.module:factory" in result.stderr


def test_a_factory_that_builds_another_model_each_time_is_caught(tmp_path: Path) -> None:
    (tmp_path / "drifting.py").write_text(textwrap.dedent("""
        import os
        import numpy as np
        import jax.numpy as jnp

        def build():
            w = np.random.default_rng(int.from_bytes(os.urandom(4), "little")).standard_normal((4, 3)).astype(np.float32)
            return (lambda x: jnp.tanh(x @ w)), {"x": np.zeros((1, 4), np.float32)}
    """))
    result = run_bridge("convert", "drifting:build", "--to", "onnx", "-o", str(tmp_path / "d.bridge"), cwd=tmp_path)
    assert result.returncode == 2
    assert "drifting:build: built a different model this time" in result.stderr and "deterministic" in result.stderr


def test_keras_still_loads_with_tensorflow_where_jax_is_installed() -> None:
    assert _python("import jax, keras; print(keras.backend.backend())") == "tensorflow"


def test_formats_lists_jax_and_what_to_install() -> None:
    result = run_bridge("formats")
    assert result.returncode == 0
    assert "jax" in result.stdout and "jax2onnx" in result.stdout and "jax2tf" in result.stdout
    assert "JAX/Flax" in result.stdout
