"""The zoo: declarations are well formed, exports write loadable files, weights are not degenerate.

torch and TensorFlow never load in this process: exports run in bridge.zoo.export's child process and
every numeric check runs in a subprocess of its own.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import HopError, InputError, OutputError
from bridge.zoo import MODELS, ZooModel, export, get
from bridge.zoo.export import ExportResult
from bridge.zoo.registry import SOURCES, TARGETS, InputSpec, KnownFailure, names

ROOT = Path(__file__).resolve().parent.parent
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_KERAS = importlib.util.find_spec("keras") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed (pip install bridge[torch])")
needs_keras = pytest.mark.skipif(not HAS_KERAS, reason="keras is not installed (pip install bridge[tf])")

FAST_EXPORTS = ("mlp", "cnn", "conv1d", "two_io", "keras_cnn")
EXPECTED_OUTPUT_SHAPES = {
    "mlp": [[1, 1]],
    "cnn": [[1, 10]],
    "conv1d": [[1, 8, 32]],
    "two_io": [[1, 4], [1, 2, 16, 16]],
}


def _python(code: str, timeout: float = 300) -> Any:
    """Run `code` in a fresh interpreter and return the JSON its last stdout line holds."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ExportResult]:
    """Export a model once per test module and hand back the cached result."""
    out_dir = tmp_path_factory.mktemp("zoo")
    cache: dict[str, ExportResult] = {}

    def once(name: str) -> ExportResult:
        if name not in cache:
            cache[name] = export(name, out_dir)
        return cache[name]

    return once


# --- declarations -----------------------------------------------------------------------------


def test_names_are_unique_and_get_finds_each() -> None:
    assert len(names()) == len(set(names())) == len(MODELS)
    for model in MODELS:
        assert get(model.name) is model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_declaration_is_well_formed(model: ZooModel) -> None:
    assert model.description.strip() and "\n" not in model.description
    assert model.source in SOURCES
    assert all(f.target in TARGETS and f.reason.strip() for f in model.known_failures)
    assert len({spec.name for spec in model.inputs}) == len(model.inputs)
    for spec in model.inputs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):
            assert spec.high is not None and spec.high > 0


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_builder_reference_resolves_without_importing_it(model: ZooModel) -> None:
    module_name, _, attr = model.builder.partition(":")
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None, f"{model.builder}: module not found"
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert attr in functions, f"{model.builder}: no top-level function {attr!r} in {spec.origin}"


def test_get_unknown_name_lists_the_zoo() -> None:
    with pytest.raises(InputError, match="no zoo model 'nope'.*mlp.*keras_cnn"):
        get("nope")


def test_importing_zoo_loads_no_framework() -> None:
    loaded = _python("""
        import json, sys
        import bridge.zoo, bridge.zoo.registry, bridge.zoo.export
        print(json.dumps([m for m in ("torch", "tensorflow", "keras", "onnx", "onnxruntime") if m in sys.modules]))
    """)
    assert loaded == []


def test_example_inputs_follow_the_spec_and_are_deterministic() -> None:
    model = ZooModel("t", "test", "torch", "bridge.zoo.torch_models:build_mlp",
                     (InputSpec("a", (2, 3)), InputSpec("ids", (4, 50), "int64", high=7)))
    first, second = model.example_inputs(), model.example_inputs()
    assert first["a"].dtype == np.float32 and first["a"].shape == (2, 3)
    assert first["ids"].dtype == np.int64 and first["ids"].shape == (4, 50)
    assert first["ids"].min() >= 0 and first["ids"].max() == 6
    assert all(np.array_equal(first[k], second[k]) for k in first)


_VALID = {"name": "t", "description": "d", "source": "torch", "builder": "m:f", "inputs": (InputSpec("x", (1,)),)}


def test_a_valid_declaration_is_accepted() -> None:
    assert ZooModel(**_VALID).known_failure("onnx") is None


@pytest.mark.parametrize(
    "change",
    [{"source": "mxnet"}, {"description": "two\nlines"}, {"builder": "bridge.zoo.torch_models.build_mlp"}, {"inputs": ()}],
    ids=["source", "description", "builder", "inputs"],
)
def test_zoo_model_rejects_malformed_fields(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ZooModel(**{**_VALID, **change})


def test_known_failure_names_a_format() -> None:
    with pytest.raises(ValueError, match="target"):
        KnownFailure("pytorch", "no such format")
    model = ZooModel(**{**_VALID, "known_failures": (KnownFailure("tflite", "why"),)})
    assert model.known_failure("tflite") == KnownFailure("tflite", "why")


def test_int_input_needs_high() -> None:
    with pytest.raises(ValueError, match="high"):
        InputSpec("ids", (1, 4), "int64")


# --- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAST_EXPORTS)
def test_export_writes_model_and_declared_inputs(name: str, exported: Callable[[str], ExportResult]) -> None:
    model = get(name)
    if model.source == "torch" and not HAS_TORCH or model.source == "keras" and not HAS_KERAS:
        pytest.skip(f"{model.source} is not installed")
    result = exported(name)
    assert result.model is model
    expected_suffix = {"torch": ".pt2", "jax": ".jaxexport"}.get(model.source, ".keras")
    assert result.model_path == result.model_path.parent / f"{name}{expected_suffix}", result.note
    assert result.model_path.is_file() and result.model_path.stat().st_size > 0
    assert result.note == "" and not result.fell_back
    with np.load(result.inputs_path, allow_pickle=False) as data:
        assert list(data.files) == [spec.name for spec in model.inputs]
        for spec in model.inputs:
            assert data[spec.name].shape == spec.shape
            assert data[spec.name].dtype == np.dtype(spec.dtype)
            np.testing.assert_array_equal(data[spec.name], model.example_inputs()[spec.name])


def test_export_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "mlp.inputs.npz").write_bytes(b"already here")
    with pytest.raises(OutputError, match="mlp.inputs.npz: already exists.*force"):
        export("mlp", tmp_path)
    assert (tmp_path / "mlp.inputs.npz").read_bytes() == b"already here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.inputs.npz"]


@pytest.mark.slow
def test_export_force_overwrites_and_removes_a_stale_fallback(exported: Callable[[str], ExportResult]) -> None:
    if not HAS_TORCH:
        pytest.skip("torch is not installed")
    first = exported("mlp")
    stale = first.model_path.with_suffix(".pt")
    stale.write_bytes(b"an earlier TorchScript fallback")
    again = export("mlp", first.model_path.parent, force=True)
    assert again.model_path == first.model_path and again.model_path.is_file()
    assert not stale.exists()


def test_export_that_runs_out_of_time_is_a_hop_error(tmp_path: Path) -> None:
    with pytest.raises(HopError, match="gave up after 0.01 s") as caught:
        export("mlp", tmp_path, timeout=0.01)
    assert caught.value.stage == "zoo export"


def test_export_unknown_name_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no zoo model"):
        export("nope", tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_torch
def test_exported_programs_load_and_produce_declared_shapes(exported: Callable[[str], ExportResult]) -> None:
    paths = {name: [str(exported(name).model_path), str(exported(name).inputs_path)] for name in EXPECTED_OUTPUT_SHAPES}
    report = _python(f"""
        import json
        import numpy as np, torch
        from bridge.zoo.registry import get
        out = {{}}
        for name, (model_path, inputs_path) in {paths!r}.items():
            program = torch.export.load(model_path).module()
            feeds = np.load(inputs_path)
            with torch.no_grad():
                result = program(*[torch.from_numpy(feeds[s.name]) for s in get(name).inputs])
            result = result if isinstance(result, (tuple, list)) else (result,)
            out[name] = {{"shapes": [list(r.shape) for r in result],
                          "max_abs": max(float(r.abs().max()) for r in result)}}
        print(json.dumps(out))
    """)
    assert {name: r["shapes"] for name, r in report.items()} == EXPECTED_OUTPUT_SHAPES
    # Random but not degenerate weights: the CNN's logits are clearly away from zero.
    assert report["cnn"]["max_abs"] > 1e-3


@needs_keras
def test_exported_keras_model_loads_and_produces_logits(exported: Callable[[str], ExportResult]) -> None:
    result = exported("keras_cnn")
    report = _python(f"""
        import json
        import numpy as np, keras
        model = keras.saving.load_model({str(result.model_path)!r})
        out = np.asarray(model.predict(np.load({str(result.inputs_path)!r})["image"], verbose=0))
        print(json.dumps({{"inputs": [t.name for t in model.inputs], "shape": list(out.shape),
                          "max_abs": float(np.abs(out).max())}}))
    """)
    assert report["inputs"] == ["image"] and report["shape"] == [1, 10]
    assert report["max_abs"] > 1e-3


@needs_torch
def test_resnet_block_batchnorm_is_calibrated() -> None:
    report = _python("""
        import json
        import torch
        from bridge.zoo.registry import get
        model = get("resnet_block").build()
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        with torch.no_grad():
            out = model(torch.from_numpy(get("resnet_block").example_inputs()["x"]))
        print(json.dumps({"training": model.training, "norms": len(norms),
                          "var_all_ones": [bool(torch.allclose(m.running_var, torch.ones_like(m.running_var))) for m in norms],
                          "mean_all_zero": [bool(not m.running_mean.any()) for m in norms],
                          "momentum": [m.momentum for m in norms], "max_abs": float(out.abs().max())}))
    """)
    assert report["training"] is False
    assert report["norms"] == 3
    assert not any(report["var_all_ones"]) and not any(report["mean_all_zero"])
    assert report["momentum"] == [0.1] * 3  # restored after calibration
    assert report["max_abs"] > 1e-3


@pytest.mark.slow
@needs_torch
def test_dynamic_batch_export_accepts_other_batch_sizes(exported: Callable[[str], ExportResult]) -> None:
    result = exported("dynamic_batch")
    assert result.model_path.suffix == ".pt2"
    shapes = _python(f"""
        import json
        import torch
        program = torch.export.load({str(result.model_path)!r}).module()
        with torch.no_grad():
            print(json.dumps([list(program(torch.randn(n, 3, 16, 16)).shape) for n in (1, 2, 7)]))
    """)
    assert shapes == [[1, 5], [2, 5], [7, 5]]


@pytest.mark.heavy  # every model, 1-2 min; the matrix exports each of them too, and the default run exports FAST_EXPORTS
@pytest.mark.parametrize("name", [n for n in names() if n not in (*FAST_EXPORTS, "dynamic_batch")])
def test_every_other_model_exports(name: str, tmp_path: Path) -> None:
    model = get(name)
    if model.source == "torch" and not HAS_TORCH or model.source == "keras" and not HAS_KERAS:
        pytest.skip(f"{model.source} is not installed")
    if name in ("resnet18", "mobilenet_v3_small") and importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (pip install bridge[zoo])")
    result = export(name, tmp_path)
    assert result.model_path.is_file()
    with np.load(result.inputs_path, allow_pickle=False) as data:
        assert {k: (data[k].shape, data[k].dtype) for k in data.files} == {
            s.name: (s.shape, np.dtype(s.dtype)) for s in model.inputs
        }
