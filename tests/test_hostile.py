"""Broken and hostile inputs: each is refused with exit 2 and one line naming the file, and nothing is left behind.

The corpus is written by fixtures/hostile/build.py into a temporary directory once per session.
Every case runs the real CLI in a subprocess, so the exit code, stderr and the files on disk are
what a user would see. The convert cases use the default output directory (MODEL.bridge beside
the model), and the test checks that neither it nor a hidden staging directory appears.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "fixtures" / "hostile" / "build.py"
SENTINEL = "PWNED"  # build.py's pickles run `touch CORPUS/PWNED` if anything unpickles them


def bridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "corpus"
    subprocess.run([sys.executable, str(BUILD), str(out)], check=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def tiny_converted(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.onnx (y = 2x + 1, x [1, 4]) converted to TFLite: a real output directory to verify."""
    out = tmp_path_factory.mktemp("tiny") / "tiny.bridge"
    result = bridge("convert", str(corpus / "tiny.onnx"), "--to", "tflite", "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def leftovers(directory: Path) -> list[Path]:
    """Output or staging directories (``X.bridge``, ``.X.bridge.tmp-*``, ``.X.bridge.old-*``) under `directory`."""
    return sorted(p for p in directory.rglob("*") if ".bridge" in p.name)


def assert_refused(result: subprocess.CompletedProcess[str], named: str, *fragments: str) -> str:
    """Exit 2, one or two lines on stderr naming `named` and saying each of `fragments`, no traceback."""
    stderr = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert 1 <= len(stderr.splitlines()) <= 2, result.stderr
    assert stderr.startswith("bridge: error: "), result.stderr
    assert named in stderr, result.stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, result.stderr)
    return stderr


@dataclass(frozen=True)
class Case:
    model: str
    """Path inside the corpus."""
    to: str
    says: tuple[str, ...]
    """Fragments the message must contain: what is wrong and what to do."""
    args: tuple[str, ...] = ()


TORCHSCRIPT_SHAPE = ("--input-shape", "x:1,4")
"""A .pt stores no input shapes; without one bridge stops before it ever opens the file."""

CASES = {
    "empty-onnx": Case("empty.onnx", "tflite", ("file is empty", "export the model again")),
    "empty-pt2": Case("empty.pt2", "onnx", ("file is empty", "export the model again")),
    "truncated-onnx": Case("truncated.onnx", "tflite", ("not a readable ONNX model", "export it again")),
    "random-onnx": Case("random.onnx", "tflite", ("not a readable ONNX model", "export it again")),
    "random-pt": Case("random.pt", "onnx", ("not a PyTorch file", "export it again"), TORCHSCRIPT_SHAPE),
    "random-pt2": Case("random.pt2", "onnx", ("not a PyTorch ExportedProgram", "export it again")),
    "random-tflite": Case("random.tflite", "onnx", ("not a TFLite flatbuffer", "convert it again")),
    "random-keras": Case("random.keras", "onnx", ("not a Keras archive", "export it again")),
    "random-h5": Case("random.h5", "onnx", ("not a loadable Keras model", "save it again")),
    "text-tflite": Case("text.tflite", "onnx", ("not a TFLite flatbuffer", "convert it again")),
    "onnx-dangling-input": Case("dangling.onnx", "tflite", ("'ghost'", "is not output of any previous nodes", "fix the graph")),
    "onnx-opset-99": Case("opset99.onnx", "tflite", ("opset 99", "export the model at opset")),
    "onnx-old-opset-no-adapter": Case("old_upsample.onnx", "tflite", ("opset 6 cannot be upgraded to 18", "op Upsample blocks it",
                                                                       "export it again with opset 7 or later")),
    "onnx-old-opset-unknown-op": Case("old_crop.onnx", "tflite", ("op Crop is not in ONNX opset 6", "opset 7 or later")),
    "onnx-unknown-op": Case("unknown_op.onnx", "tflite", ("No Op registered for FooBarOp", "fix the graph")),
    "onnx-custom-domain-op": Case("custom_domain_op.onnx", "tflite", ("FooBarOp is from the custom domain 'com.example.hostile'",
                                                                       "no converter reads them", "export the model again without them")),
    "onnx-contrib-op": Case("contrib_op.onnx", "torch", ("FastGelu is from the custom domain 'com.microsoft'",
                                                         "an onnxruntime-optimized file: the model before optimization")),
    "onnx-external-dotdot": Case("external_dotdot/model.onnx", "tflite", ("'../secret.bin'", "outside the model's directory", "refusing")),
    "onnx-external-absolute": Case("external_absolute/model.onnx", "tflite",
                                   ("'/etc/passwd'", "outside the model's directory", "refusing")),
    "onnx-external-sparse-dotdot": Case("external_sparse_dotdot/model.onnx", "tflite",
                                        ("'../secret.bin'", "outside the model's directory", "refusing")),
    "onnx-external-symlink": Case("external_symlink/model.onnx", "tflite", ("'weights.bin'", "outside the model's directory", "refusing")),
    "pickle-exec": Case("pickle_exec.pt", "onnx", ("would run code", "--trust-pickle"), TORCHSCRIPT_SHAPE),
    "pickle-exec-zip": Case("pickle_exec_zip.pt", "onnx", ("would run code", "--trust-pickle"), TORCHSCRIPT_SHAPE),
    "zip-slip-pt2": Case("zip_slip.pt2", "onnx", ("'../evil.txt'", "outside the archive", "refusing to extract")),
    "zip-slip-keras": Case("zip_slip.keras", "onnx", ("'../evil.txt'", "outside the archive", "refusing to extract")),
    "keras-lambda": Case("lambda.keras", "onnx", ("Lambda layer", "would run", "--trust-code")),
    "not-a-saved-model": Case("not_saved_model", "tflite", ("not a SavedModel", "no saved_model.pb")),
    "hf-no-weights": Case("hf/no_weights", "onnx", ("a config.json but no weights", "save_pretrained")),
    "hf-weights-do-not-fit": Case("hf/mismatch", "onnx", ("the weights do not fit config.json", "save config and weights together")),
    "hf-unknown-architecture": Case("hf/unknown_architecture", "onnx", ("unknown architecture 'BertForTimeTravel'", "--task")),
    "hf-auto-map": Case("hf/auto_map", "onnx", ("auto_map loads Python code", "--trust-code")),
    "hf-config-not-json": Case("hf/config_not_json", "onnx", ("config.json: not valid JSON", "save_pretrained")),
    "hf-no-architectures": Case("hf/no_architectures", "onnx", ("no 'architectures' list", "--task")),
    "jax-random": Case("random.jaxexport", "onnx", ("not a jax.export serialization", "convert it again")),
    "tfjs-missing-shard": Case("tfjs_missing_shard", "onnx", ("'group1-shard1of1.bin' is missing", "copy every shard")),
    "tfjs-weights-outside": Case("tfjs_outside", "onnx", ("'../secret.bin' lies outside the model's folder", "refusing")),
    "mar-without-manifest": Case("no_manifest.mar", "onnx", ("a .mar without MAR-INF/MANIFEST.json", "torch-model-archiver")),
    "mar-foreign-handler": Case("foreign_handler.mar", "onnx", ("its handler 'handler.py' is not the one bridge generates",
                                                                "--trust-code")),
    "tf-serving-unnumbered-version": Case("serving_unnumbered", "tflite", ("needs numbered version folders", "found 'latest'",
                                                                           "rename the version folder to an integer")),
    "jax-truncated": Case("truncated.jaxexport", "tflite", ("not a jax.export serialization", "convert it again")),
    "max-memory-too-low": Case("tiny.onnx", "tflite", ("onnx->tflite (onnx2tf) needs about 1.2 GB", "100 MB allowed by --max-memory",
                                                       "no hop of this route fits"), ("--max-memory", "100MB")),
}

# JAX factories in the corpus (jax_factories.py) that return what bridge cannot convert: refused from the
# child that built them, before any hop, nothing left behind.
JAX_FACTORY_CASES = {
    "not_a_model": ("returned a dict", "(function, inputs)"),
    "params_do_not_fit": ("does not run on its inputs (x[1, 7] float32)", "make the inputs fit the parameters"),
    "linen_without_variables": ("needs its variables", "return (module, variables)"),
    "function_without_inputs": ("returned a function", "(function, inputs)"),
}


@pytest.mark.parametrize("factory", JAX_FACTORY_CASES, ids=JAX_FACTORY_CASES.keys())
def test_bad_jax_factory_is_refused_and_leaves_nothing(factory: str, corpus: Path) -> None:
    reference = f"jax_factories:{factory}"
    result = bridge("convert", reference, "--to", "onnx", cwd=corpus)
    assert_refused(result, reference, *JAX_FACTORY_CASES[factory])
    assert leftovers(corpus) == []


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_model_is_refused_and_leaves_nothing(case: Case, corpus: Path) -> None:
    model = corpus / case.model
    assert model.exists() or model.is_symlink()
    result = bridge("convert", str(model), "--to", case.to, *case.args, cwd=corpus)
    assert_refused(result, str(model), *case.says)
    assert result.stdout == ""
    assert leftovers(corpus) == []
    assert not (corpus / SENTINEL).exists(), "the pickle's payload ran"
    for escaped in (corpus.parent / "evil.txt", corpus / "evil.txt"):
        assert not escaped.exists(), "an archive entry was extracted outside its directory"


@pytest.mark.parametrize("name", ["pickle_exec.pt", "pickle_exec_zip.pt"])
def test_verify_does_not_load_a_pickle_either(name: str, corpus: Path, tmp_path: Path) -> None:
    result = bridge("verify", str(corpus / name), "--to", "all", *TORCHSCRIPT_SHAPE, "--device", "cpu", "-o", str(tmp_path / "out"))
    assert_refused(result, str(corpus / name), "--trust-pickle")
    assert list(tmp_path.iterdir()) == []
    assert not (corpus / SENTINEL).exists(), "the pickle's payload ran"


def test_bad_input_with_force_leaves_the_existing_output_as_it_was(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "previous.bridge"
    (out / "tflite").mkdir(parents=True)
    (out / "manifest.json").write_text('{"schema": "bridge.manifest/1"}\n', encoding="utf-8")
    (out / "tflite" / "model.tflite").write_bytes(b"previous run's bytes")
    before = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
    for model in ("truncated.onnx", "pickle_exec_zip.pt"):
        result = bridge("convert", str(corpus / model), "--to", "onnx" if ".pt" in model else "tflite",
                        *(TORCHSCRIPT_SHAPE if model.endswith(".pt") else ()), "-o", str(out), "--force")
        assert_refused(result, str(corpus / model))
        after = {p.relative_to(out): (p.read_bytes() if p.is_file() else None) for p in out.rglob("*")}
        assert after == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.bridge"]


@pytest.mark.parametrize("name, says", [
    ("inputs_bad_name.npz", ("input names ['not_x']", "['x']", "key the arrays by the source input names")),
    ("inputs_bad_shape.npz", ("shape [1, 7]", "expects [1, 4]", "give one sample shaped [1, 4] or several as [samples, 1, 4]")),
    ("inputs_bad_dtype.npz", ("is int64", "expects float32", "save it as float32")),
], ids=["names", "shape", "dtype"])
def test_verify_refuses_inputs_that_do_not_fit(name: str, says: tuple[str, ...], corpus: Path, tiny_converted: Path) -> None:
    inputs = corpus / name
    result = bridge("verify", str(tiny_converted), "--inputs", str(inputs), "--device", "cpu", "--latency-runs", "1", "--quiet")
    stderr = assert_refused(result, str(inputs), *says)
    assert len(stderr.splitlines()) == 1


def test_convert_leaves_the_source_model_unchanged(corpus: Path, tiny_converted: Path) -> None:
    """onnx2tf rewrites the ONNX file it is given; bridge must give it a copy, not the user's file."""
    manifest = json.loads((tiny_converted / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["path"] == str(corpus / "tiny.onnx")
    assert manifest["source"]["sha256"] == hashlib.sha256((corpus / "tiny.onnx").read_bytes()).hexdigest()


def test_verify_accepts_inputs_that_fit(corpus: Path, tiny_converted: Path) -> None:
    """The control for the three above: the same model takes a well-formed inputs file."""
    result = bridge("verify", str(tiny_converted), "--inputs", str(corpus / "inputs_good.npz"),
                    "--device", "cpu", "--latency-runs", "1", "--quiet")
    assert result.returncode == 0, result.stderr


def test_malformed_input_shape_is_refused(corpus: Path) -> None:
    result = bridge("convert", str(corpus / "random.pt"), "--to", "onnx", "--input-shape", "x:1,a,3", cwd=corpus)
    assert_refused(result, "x:1,a,3", "--input-shape", "expected NAME:D0,D1,...")
    assert leftovers(corpus) == []


@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
def test_unwritable_output_directory_is_refused(where: str, corpus: Path, tmp_path: Path) -> None:
    if where == "under-a-file":
        parent = tmp_path / "somefile.txt"
        parent.write_text("a file, not a directory\n", encoding="utf-8")
        out, says = parent / "out", ("somefile.txt is a file, not a directory", "choose another -o")
    else:
        out, says = Path("/proc/forbidden/x"), ("/proc/forbidden does not exist", "choose another -o")
    result = bridge("convert", str(corpus / "tiny.onnx"), "--to", "tflite", "-o", str(out))
    assert_refused(result, str(out), *says)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["somefile.txt"] if where == "under-a-file" else [])
    assert leftovers(corpus) == []
